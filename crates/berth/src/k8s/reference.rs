//! Image references as Docker, Podman and Kubernetes write them:
//! `[DOMAIN[:PORT]/]PATH[:TAG][@DIGEST]`, with Docker Hub's defaults (`docker.io`,
//! `library/` for one-component paths).

use std::fmt;

/// The registry of references that name no domain.
pub const DOCKER_HUB: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The domain as written (`None`: Docker Hub implied).
    pub domain: Option<String>,
    /// The repository path as written, without the domain.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference; `Err` says what is wrong with it.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        if s.is_empty() {
            return Err("empty image reference".into());
        }
        if s.len() > 4096 {
            return Err("image reference longer than 4096 characters".into());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !valid_digest(d) {
                    return Err(format!("invalid digest `{d}` in `{s}`"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(i) if last_slash.is_none_or(|j| i > j) => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(format!("invalid tag `{t}` in `{s}`"));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_domain(first) {
                    return Err(format!("invalid registry `{first}` in `{s}`"));
                }
                (Some(first.to_string()), rest)
            }
            _ => (None, name),
        };
        if path.is_empty() || !path.split('/').all(oci::name::is_valid_component) {
            return Err(format!(
                "invalid repository path `{path}` in `{s}` (lowercase letters, digits and \
                 separators `.`, `_`, `__`, `-`, components joined by `/`)"
            ));
        }
        Ok(ImageRef {
            domain,
            path: path.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The registry host (and port): `docker.io` when none is written; Docker Hub's
    /// aliases are folded into `docker.io`.
    pub fn registry(&self) -> &str {
        match self.domain.as_deref() {
            None | Some("index.docker.io") | Some("registry-1.docker.io") => DOCKER_HUB,
            Some(d) => d,
        }
    }

    /// The repository path as the registry knows it (`library/nginx` for `nginx`).
    pub fn full_path(&self) -> String {
        if self.registry() == DOCKER_HUB && !self.path.contains('/') {
            format!("library/{}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// The repository path a developer writes (`nginx` for `docker.io/library/nginx`).
    pub fn short_path(&self) -> &str {
        if self.registry() == DOCKER_HUB {
            self.path.strip_prefix("library/").unwrap_or(&self.path)
        } else {
            &self.path
        }
    }

    /// Whether `self` (a reference found in a manifest) is the image `wanted` names:
    /// same registry and repository and, when `wanted` has them, the same tag and digest.
    pub fn is_image(&self, wanted: &ImageRef) -> bool {
        self.registry() == wanted.registry()
            && self.full_path() == wanted.full_path()
            && (wanted.tag.is_none() || wanted.tag == self.tag)
            && (wanted.digest.is_none() || wanted.digest == self.digest)
    }

    /// The same image in another registry: `<registry>/<short path>[:tag][@digest]`.
    pub fn moved_to(&self, registry: &str) -> String {
        let mut out = format!("{registry}/{}", self.short_path());
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(d);
        }
        out
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.domain {
            write!(f, "{d}/")?;
        }
        f.write_str(&self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_tag(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && t.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    !alg.is_empty()
        && alg
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
        && hex.len() >= 32
        && hex
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "=_-".contains(c))
}

fn valid_domain(d: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = d.strip_prefix('[') {
        // [IPv6] or [IPv6]:port
        let Some((h, after)) = rest.split_once(']') else {
            return false;
        };
        let ok = !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
        match after {
            "" => (ok, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (ok, Some(p)),
                None => return false,
            },
        }
    } else {
        let (h, p) = match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        let ok = !h.is_empty()
            && h.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        (ok, p)
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_the_usual_forms() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(
            (r.registry(), r.full_path().as_str(), r.short_path()),
            ("docker.io", "library/nginx", "nginx")
        );
        assert_eq!(r.tag, None);

        let r = ImageRef::parse("docker.io/library/nginx:1.25").unwrap();
        assert_eq!(
            (r.registry(), r.full_path().as_str(), r.short_path()),
            ("docker.io", "library/nginx", "nginx")
        );
        assert_eq!(r.tag.as_deref(), Some("1.25"));

        let r = ImageRef::parse("registry.example.com:5000/team/app:v1").unwrap();
        assert_eq!(r.registry(), "registry.example.com:5000");
        assert_eq!(r.path, "team/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));

        let r = ImageRef::parse(&format!("localhost:5000/app@{DIGEST}")).unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(DIGEST));

        let r = ImageRef::parse(&format!("ghcr.io/o/app:1.0@{DIGEST}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.to_string(), format!("ghcr.io/o/app:1.0@{DIGEST}"));

        let r = ImageRef::parse("localhost/app").unwrap();
        assert_eq!(r.registry(), "localhost");
        let r = ImageRef::parse("[::1]:5000/app:x").unwrap();
        assert_eq!(r.registry(), "[::1]:5000");
        let r = ImageRef::parse("user/app").unwrap();
        assert_eq!(
            (r.registry(), r.full_path().as_str()),
            ("docker.io", "user/app")
        );
        let r = ImageRef::parse("index.docker.io/user/app").unwrap();
        assert_eq!(r.registry(), "docker.io");
    }

    #[test]
    fn refuses_what_is_not_a_reference() {
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "nginx@sha256:short",
            "{{ .Values.image }}",
            "${IMAGE}",
            "a//b",
            "registry.example.com:port/app",
            "app:tag:tag",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn matching_and_moving() {
        let want = ImageRef::parse("nginx").unwrap();
        assert!(ImageRef::parse("docker.io/library/nginx:1")
            .unwrap()
            .is_image(&want));
        assert!(!ImageRef::parse("ghcr.io/library/nginx:1")
            .unwrap()
            .is_image(&want));
        let want_tag = ImageRef::parse("nginx:1").unwrap();
        assert!(!ImageRef::parse("nginx:2").unwrap().is_image(&want_tag));

        let r =
            ImageRef::parse(&format!("registry.example.com:5000/team/app:v1@{DIGEST}")).unwrap();
        assert_eq!(
            r.moved_to("localhost:31000"),
            format!("localhost:31000/team/app:v1@{DIGEST}")
        );
        assert_eq!(
            ImageRef::parse("nginx").unwrap().moved_to("localhost:1"),
            "localhost:1/nginx"
        );
    }
}
