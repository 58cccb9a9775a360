//! Authentication (who is calling) and the access rule (what they may do).
//!
//! - [`acl`]: the rule, in one place;
//! - [`password`]: argon2id hashes and random secrets;
//! - [`jwt`]: the Docker token flow's signed bearer tokens;
//! - [`throttle`]: back-off for failed logins;
//! - this module: turning an `Authorization` header into a [`Caller`].
//!
//! Credentials are HTTP Basic (a password, or an access token as the password) or a
//! Bearer JWT from `/auth/token`. A Bearer token limits the caller to the actions it
//! grants *and* to what the rule allows now: removing someone from a team, deleting a
//! user or revoking the access token a JWT came from takes effect on the next request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine;
use oci::RepoName;
use sha2::{Digest, Sha256};

pub mod acl;
pub mod jwt;
pub mod password;
pub mod throttle;

use crate::app::App;
use crate::meta::accounts::{AuditEntry, User};
use crate::meta::now_ms;
use acl::{Actions, Principal};

/// Prefix of access-token secrets, so they are recognisable where they leak (logs,
/// scanners) and are told apart from passwords.
pub const TOKEN_PREFIX: &str = "berth_";

/// Refuses names that can't be namespaces (user and team names).
pub fn check_name(kind: &str, name: &str) -> anyhow::Result<()> {
    if name.len() > 64 || !oci::name::is_valid_component(name) {
        anyhow::bail!(
            "invalid {kind} name {name:?}: use at most 64 lowercase letters, digits and single \
             separators (. _ __ -) between them, as in a repository path component"
        );
    }
    Ok(())
}

pub fn check_password(p: &str) -> anyhow::Result<()> {
    if p.chars().count() < 8 {
        anyhow::bail!("the password must have at least 8 characters");
    }
    if p.chars().count() > 1024 {
        anyhow::bail!("the password must have at most 1024 characters");
    }
    Ok(())
}

pub fn check_token_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(|c| c.is_control()) {
        anyhow::bail!("a token name must have 1 to 64 printable characters");
    }
    if name == "." || name == ".." || name.contains('/') {
        anyhow::bail!("a token name can't be . or .. or contain /");
    }
    Ok(())
}

/// A new access-token secret: the prefix and 32 random bytes in hex.
pub fn new_token_secret() -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        hex::encode(password::random_bytes::<32>())
    )
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is off: an open registry.
    Open,
    Anonymous,
    User {
        principal: Principal,
        /// `None`: credentials (Basic); `Some`: what a bearer token grants, per repository.
        granted: Option<HashMap<String, Actions>>,
    },
}

impl Caller {
    /// What this caller may do in `repo` now.
    pub fn permitted(&self, repo: &RepoName) -> Actions {
        match self {
            Caller::Open => Actions::ALL,
            Caller::Anonymous => Actions::NONE,
            Caller::User { principal, granted } => {
                let acl = principal.permitted(repo.namespace());
                match granted {
                    None => acl,
                    Some(g) => acl.intersect(g.get(repo.as_str()).copied().unwrap_or_default()),
                }
            }
        }
    }

    /// What the access rule would allow with a token for the right scope.
    pub fn permitted_by_rule(&self, repo: &RepoName) -> Actions {
        match self {
            Caller::Open => Actions::ALL,
            Caller::Anonymous => Actions::NONE,
            Caller::User { principal, .. } => principal.permitted(repo.namespace()),
        }
    }

    /// Namespaces whose repositories this caller may list; `None`: all.
    pub fn readable_namespaces(&self) -> Option<Vec<String>> {
        match self {
            Caller::Open => None,
            Caller::Anonymous => Some(Vec::new()),
            Caller::User { principal, .. } => principal.readable_namespaces(),
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::User { principal, .. } => Some(&principal.name),
            _ => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Open => true,
            Caller::Anonymous => false,
            Caller::User { principal, .. } => principal.admin,
        }
    }
}

#[derive(Debug)]
pub enum AuthError {
    /// Wrong or unusable credentials.
    BadCredentials,
    /// Too many failures: try again after this long.
    Throttled(Duration),
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for AuthError {
    fn from(e: anyhow::Error) -> Self {
        AuthError::Internal(e)
    }
}

/// Credentials verified recently: argon2 is deliberately slow, and clients send Basic
/// credentials with every request. The key covers the stored hash, so a changed
/// password or a deleted user never matches a stale entry.
#[derive(Default)]
pub struct VerifiedCache(Mutex<HashMap<[u8; 32], Instant>>);

const VERIFIED_TTL: Duration = Duration::from_secs(300);

impl VerifiedCache {
    fn key(phc: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(phc.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn hit(&self, key: &[u8; 32]) -> bool {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|t| t.elapsed() < VERIFIED_TTL)
    }

    fn insert(&self, key: [u8; 32]) {
        let mut m = self.0.lock().unwrap();
        if m.len() > 10_000 {
            m.retain(|_, t| t.elapsed() < VERIFIED_TTL);
        }
        m.insert(key, Instant::now());
    }
}

pub(crate) async fn principal(app: &App, user: &User) -> anyhow::Result<Principal> {
    Ok(Principal {
        id: user.id,
        name: user.name.clone(),
        admin: user.is_admin,
        teams: app.accounts.user_teams(user.id).await?,
    })
}

/// A verified login: who, and through which access token if any.
pub struct Login {
    pub principal: Principal,
    pub token_id: Option<i64>,
}

/// Checks a user name and a password or access token, with throttling and an audit
/// record of failures.
pub async fn login(
    app: &App,
    name: &str,
    secret: &str,
    client: Option<IpAddr>,
) -> Result<Login, AuthError> {
    let keys = throttle::Keys::new(name, client);
    let checked = throttle::check(app.accounts.as_ref(), &keys)
        .await?
        .map_err(AuthError::Throttled)?;

    let verified = if let Some(_rest) = secret.strip_prefix(TOKEN_PREFIX) {
        match app
            .accounts
            .token_use(&password::secret_hash(secret))
            .await?
        {
            Some((t, u)) if u.name == name => Some((u, Some(t.id))),
            _ => None,
        }
    } else {
        match app.accounts.user_by_name(name).await? {
            Some((u, phc)) => {
                let key = VerifiedCache::key(&phc, secret);
                let ok = app.verified.hit(&key) || {
                    let (pw, phc2) = (secret.to_string(), phc.clone());
                    let ok = tokio::task::spawn_blocking(move || password::verify(&pw, &phc2))
                        .await
                        .unwrap_or(false);
                    if ok {
                        app.verified.insert(key);
                    }
                    ok
                };
                ok.then_some((u, None))
            }
            None => {
                let pw = secret.to_string();
                let _ = tokio::task::spawn_blocking(move || password::burn_time(&pw)).await;
                None
            }
        }
    };
    match verified {
        Some((user, token_id)) => {
            throttle::succeeded(app.accounts.as_ref(), &keys, &checked).await?;
            Ok(Login {
                principal: principal(app, &user).await?,
                token_id,
            })
        }
        None => {
            throttle::failed(app.accounts.as_ref(), &keys).await?;
            let _ = app
                .accounts
                .audit(AuditEntry {
                    at: now_ms(),
                    actor: Some(name.to_string()),
                    action: "login_failed".into(),
                    target: None,
                    detail: None,
                    client: client.map(|c| c.to_string()),
                })
                .await;
            Err(AuthError::BadCredentials)
        }
    }
}

/// `Authorization: Basic …` decoded into (user, secret).
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Identifies the caller of a request.
pub async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Caller, AuthError> {
    if !app.config.auth.enabled {
        return Ok(Caller::Open);
    }
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    let value = value.to_str().map_err(|_| AuthError::BadCredentials)?;
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::BadCredentials)?;
    if scheme.eq_ignore_ascii_case("basic") {
        let (user, secret) = basic_credentials(headers).ok_or(AuthError::BadCredentials)?;
        let login = login(app, &user, &secret, client).await?;
        return Ok(Caller::User {
            principal: login.principal,
            granted: None,
        });
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let claims = bearer_claims(app, rest.trim())?;
        let principal = bearer_principal(app, &claims).await?;
        let mut granted: HashMap<String, Actions> = HashMap::new();
        for a in claims.access.iter().filter(|a| a.kind == "repository") {
            let actions = a
                .actions
                .iter()
                .fold(Actions::NONE, |acc, w| acc.union(Actions::parse_one(w)));
            let e = granted.entry(a.name.clone()).or_default();
            *e = e.union(actions);
        }
        return Ok(Caller::User {
            principal,
            granted: Some(granted),
        });
    }
    Err(AuthError::BadCredentials)
}

/// The claims of a bearer token whose signature, issuer and audience verified. A token
/// seen before is not verified again (the signature check is most of the CPU of an
/// authenticated pull), but its validity period is checked every time, exactly as
/// [`jwt::Signer::verify`] checks it.
fn bearer_claims(app: &App, token: &str) -> Result<Arc<jwt::Claims>, AuthError> {
    let claims = match app.bearers.get(token) {
        Some(c) => c,
        None => {
            let c = Arc::new(app.signer.verify(token).ok_or(AuthError::BadCredentials)?);
            app.bearers.insert(token.to_string(), c.clone());
            c
        }
    };
    if !jwt::in_validity(&claims) {
        return Err(AuthError::BadCredentials);
    }
    Ok(claims)
}

/// Who a bearer token is for: the user must still exist under that name and the access
/// token it was issued for must not be revoked. Asked of the database at every request,
/// in one query, so that deleting a user, revoking a token or leaving a team applies at
/// once, also when done with the CLI or on another replica.
async fn bearer_principal(app: &App, claims: &jwt::Claims) -> Result<Principal, AuthError> {
    let (user, teams) = app
        .accounts
        .bearer_user(claims.uid, &claims.sub, claims.tid)
        .await?
        .ok_or(AuthError::BadCredentials)?;
    Ok(Principal {
        id: user.id,
        name: user.name,
        admin: user.is_admin,
        teams,
    })
}
