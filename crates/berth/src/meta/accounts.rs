//! Accounts: users, teams, memberships, access tokens, and the audit log.
//!
//! A user's or team's name is its namespace: the first path component of the
//! repositories it owns. Users and teams live in one table so a name can't be both.

use async_trait::async_trait;
use serde::Serialize;

use super::Result;

/// What a team member may do in the team's namespace. Stored as text so that new roles
/// (e.g. read-only) are a new variant, not a schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Pull, push and delete.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// The teams of [`Accounts::bearer_user`]'s rows, given each row's `team` and `role`
/// columns (a user in no team has one row with neither).
pub(crate) fn joined_teams(
    rows: impl Iterator<Item = (Option<String>, Option<String>)>,
) -> Vec<(String, Role)> {
    rows.filter_map(|(team, role)| Some((team?, Role::parse(&role?)?)))
        .collect()
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Team {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccessToken {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub client: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    User,
    Team,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Team => "team",
        }
    }
}

/// Outcome of creating something with a unique name.
#[derive(Debug)]
pub enum Created<T> {
    Ok(T),
    /// The name is taken (by a user or team, or by another token of this user).
    NameTaken,
}

#[derive(Debug, PartialEq, Eq)]
pub enum MemberChange {
    Done,
    NoSuchTeam,
    NoSuchUser,
}

#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    async fn user_count(&self) -> Result<u64>;

    async fn user_create(
        &self,
        name: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<Created<User>>;

    /// A user and their password hash.
    async fn user_by_name(&self, name: &str) -> Result<Option<(User, String)>>;

    async fn user_by_id(&self, id: i64) -> Result<Option<User>>;

    /// The teams a user belongs to, with their role in each.
    async fn user_teams(&self, user_id: i64) -> Result<Vec<(String, Role)>>;

    /// Who a bearer token is for, in one query (it runs at every authenticated
    /// request): user `id` if it still exists and is still called `name`, with its
    /// teams as [`Accounts::user_teams`] lists them, provided access token `token`, when
    /// there is one, still exists and has not expired.
    async fn bearer_user(
        &self,
        id: i64,
        name: &str,
        token: Option<i64>,
    ) -> Result<Option<(User, Vec<(String, Role)>)>>;

    async fn users(&self) -> Result<Vec<User>>;

    async fn user_set_password(&self, name: &str, password_hash: &str) -> Result<bool>;

    async fn user_set_admin(&self, name: &str, is_admin: bool) -> Result<bool>;

    async fn user_logged_in(&self, id: i64) -> Result<()>;

    /// Deletes a user or team and, in the same transaction, every repository of its
    /// namespace (tags, manifests, blob links). Returns the number of repositories
    /// deleted, or `None` if there was no such account.
    async fn account_delete(&self, name: &str, kind: AccountKind) -> Result<Option<u64>>;

    async fn team_create(&self, name: &str) -> Result<Created<Team>>;

    async fn team(&self, name: &str) -> Result<Option<Team>>;

    async fn teams(&self) -> Result<Vec<Team>>;

    async fn team_member_add(&self, team: &str, user: &str, role: Role) -> Result<MemberChange>;

    async fn team_member_remove(&self, team: &str, user: &str) -> Result<MemberChange>;

    async fn token_create(
        &self,
        user_id: i64,
        name: &str,
        secret_hash: &str,
        expires_at: Option<i64>,
    ) -> Result<Created<AccessToken>>;

    /// A token that exists and has not expired, with its user; marks it used.
    async fn token_use(&self, secret_hash: &str) -> Result<Option<(AccessToken, User)>>;

    async fn tokens(&self, user: Option<&str>) -> Result<Vec<AccessToken>>;

    async fn token_revoke(&self, user: &str, name: &str) -> Result<bool>;

    /// Records a signed-in browser (`id`: hash of the cookie secret) until `expires_at`.
    /// Expired sessions are purged on the way.
    async fn session_create(
        &self,
        id: &str,
        user_id: i64,
        csrf: &str,
        expires_at: i64,
    ) -> Result<()>;

    /// The user of an unexpired session, and its CSRF token.
    async fn session_get(&self, id: &str) -> Result<Option<(User, String)>>;

    async fn session_delete(&self, id: &str) -> Result<()>;

    /// Signs a user out everywhere but in session `keep` (after a password change).
    async fn sessions_delete_user(&self, user: &str, keep: Option<&str>) -> Result<()>;

    async fn audit(&self, entry: AuditEntry) -> Result<()>;

    /// Newest first, entries before `before` (ms), at most `limit`.
    async fn audit_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>>;

    /// Failed sign-ins recorded under any of `keys` (`user:<name>`, `ip:<address>`):
    /// `(key, failures, last failure in ms)` for each key that has a record.
    async fn login_failures(&self, keys: &[&str]) -> Result<Vec<(String, u32, i64)>>;

    /// Counts one more failed sign-in under each of `keys` at `now` (ms). A count whose
    /// last failure is older than `forget_before` starts again at 1, and records that old
    /// are dropped. Not synced to disk on its own: a throttle count may be lost with the
    /// machine's power, nothing else.
    async fn login_failed(&self, keys: &[&str], now: i64, forget_before: i64) -> Result<()>;

    /// Forgets the failures recorded under `key` (after a successful sign-in).
    async fn login_forget(&self, key: &str) -> Result<()>;

    /// The bearer tokens' signing key (PKCS#8 PEM), which every process using this
    /// database shares: `candidate` is stored if there is none yet, and whatever is
    /// stored is returned, so of processes starting together all get the first's key.
    async fn signing_key(&self, candidate: &str) -> Result<String>;
}
