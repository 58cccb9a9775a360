//! Repository names, per the spec's grammar:
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.

use std::fmt;
use std::str::FromStr;

/// Longest accepted repository name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A validated repository name. It contains only `[a-z0-9._/-]`, never `..` as a
/// component, and no empty component, so it can be used inside a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("invalid repository name: each path component must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*")]
    Invalid,
}

/// Whether `c` is one path component of the grammar (also the grammar of a namespace,
/// i.e. a user or team name).
pub fn is_valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-"+, followed by an alphanumeric.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component: the user or team that owns the repository.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if s.split('/').all(is_valid_component) {
            Ok(RepoName(s.to_string()))
        } else {
            Err(NameError::Invalid)
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        for ok in [
            "a",
            "library/ubuntu",
            "a-b/c__d/e.f",
            "a--b",
            "x0/y1/z2",
            "team/sub/deep/repo",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok:?} refused");
        }
        assert_eq!(
            "alice/web/app".parse::<RepoName>().unwrap().namespace(),
            "alice"
        );
    }

    #[test]
    fn refuses_path_tricks_and_bad_names() {
        for bad in [
            "", "/", "a/", "/a", "a//b", "..", "a/../b", "a/./b", "%2e%2e", "A", "a_", "a___b",
            "a.-b", "-a", "a b", "a\0b", "a\\b", ".a",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?} accepted");
        }
        let long = "a".repeat(256);
        assert_eq!(long.parse::<RepoName>(), Err(NameError::TooLong));
        assert!("a".repeat(255).parse::<RepoName>().is_ok());
    }
}
