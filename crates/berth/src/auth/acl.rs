//! The access rule. Everything that decides who may do what in which repository (the
//! `/v2` API, the token service, the catalog, the management API, the UI) asks this
//! module, and nothing else encodes the rule.
//!
//! - an admin may pull, push and delete anywhere;
//! - a user may pull, push and delete in the namespace named after them;
//! - a team member may do what their role allows in the team's namespace;
//! - anything else is denied.
//!
//! Read-only members or per-namespace roles are a new [`Role`] variant mapped to a
//! smaller [`Actions`] set here; callers only ever ask [`Principal::permitted`].

use std::fmt;

use crate::meta::accounts::Role;

/// A set of repository actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    pub const ALL: Actions = Actions(7);

    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses one action of a Docker token scope (`pull`, `push`, `delete`, `*`).
    /// Unknown actions grant nothing.
    pub fn parse_one(s: &str) -> Actions {
        match s {
            "pull" => Actions::PULL,
            "push" => Actions::PUSH,
            "delete" => Actions::DELETE,
            "*" => Actions::ALL,
            _ => Actions::NONE,
        }
    }

    /// The actions as scope words, in a stable order.
    pub fn words(self) -> Vec<&'static str> {
        [
            (Actions::PULL, "pull"),
            (Actions::PUSH, "push"),
            (Actions::DELETE, "delete"),
        ]
        .into_iter()
        .filter(|(a, _)| self.contains(*a))
        .map(|(_, w)| w)
        .collect()
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.words().join(","))
    }
}

impl Role {
    pub fn actions(self) -> Actions {
        match self {
            Role::Member => Actions::ALL,
        }
    }
}

/// An authenticated account, as the access rule sees it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    pub teams: Vec<(String, Role)>,
}

impl Principal {
    /// What this principal may do in `namespace` (a repository's first component).
    pub fn permitted(&self, namespace: &str) -> Actions {
        if self.admin || self.name == namespace {
            return Actions::ALL;
        }
        self.teams
            .iter()
            .filter(|(team, _)| team == namespace)
            .fold(Actions::NONE, |acc, (_, role)| acc.union(role.actions()))
    }

    /// The namespaces this principal may pull from; `None`: all of them (admin).
    pub fn readable_namespaces(&self) -> Option<Vec<String>> {
        if self.admin {
            return None;
        }
        let mut v = vec![self.name.clone()];
        v.extend(
            self.teams
                .iter()
                .filter(|(_, r)| r.actions().contains(Actions::PULL))
                .map(|(t, _)| t.clone()),
        );
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, admin: bool, teams: &[&str]) -> Principal {
        Principal {
            id: 1,
            name: name.into(),
            admin,
            teams: teams
                .iter()
                .map(|t| (t.to_string(), Role::Member))
                .collect(),
        }
    }

    #[test]
    fn the_rule() {
        let admin = user("root", true, &[]);
        let alice = user("alice", false, &["web"]);
        let bob = user("bob", false, &[]);
        assert_eq!(admin.permitted("anything"), Actions::ALL);
        assert_eq!(alice.permitted("alice"), Actions::ALL);
        assert_eq!(alice.permitted("web"), Actions::ALL);
        assert_eq!(alice.permitted("bob"), Actions::NONE);
        assert_eq!(alice.permitted("alicex"), Actions::NONE);
        assert_eq!(bob.permitted("web"), Actions::NONE);
        assert_eq!(bob.readable_namespaces(), Some(vec!["bob".to_string()]));
        assert_eq!(admin.readable_namespaces(), None);
    }

    #[test]
    fn scope_words() {
        assert_eq!(Actions::parse_one("*"), Actions::ALL);
        assert_eq!(Actions::parse_one("admin"), Actions::NONE);
        assert_eq!(Actions::PULL.union(Actions::PUSH).to_string(), "pull,push");
        assert!(Actions::ALL.contains(Actions::DELETE));
        assert!(!Actions::PULL.contains(Actions::PUSH));
    }
}
