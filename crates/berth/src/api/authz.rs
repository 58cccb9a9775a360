//! Authorisation of `/v2` requests: which action each endpoint needs, and the answer
//! when the caller lacks it.
//!
//! - no credentials: 401 with the Docker token challenge for the needed scope;
//! - a bearer token that lacks a scope the rule would allow: 401 with the challenge
//!   and `error="insufficient_scope"`, so the client fetches a wider token;
//! - the rule denies: 403 `DENIED`, the same whether the repository exists or not.

use std::net::IpAddr;

use axum::http::request::Parts;
use axum::http::Method;
use oci::{ErrorCode, RepoName};

use super::error::ApiError;
use super::route::Endpoint;
use crate::app::App;
use crate::auth::acl::Actions;
use crate::auth::{authenticate, AuthError, Caller};

enum Need<'a> {
    /// Any authenticated caller (the base endpoint, the catalog — filtered later).
    Authenticated(Option<&'static str>),
    Repo(&'a RepoName, Actions),
}

fn need<'a>(method: &Method, endpoint: &'a Endpoint) -> Need<'a> {
    use Endpoint as E;
    let read = matches!(*method, Method::GET | Method::HEAD);
    match endpoint {
        E::Base => Need::Authenticated(None),
        E::Catalog => Need::Authenticated(Some("registry:catalog:*")),
        E::Tags(r) | E::Referrers(r, _) => Need::Repo(r, Actions::PULL),
        E::Manifest(r, _) | E::Blob(r, _) if read => Need::Repo(r, Actions::PULL),
        E::Manifest(r, _) | E::Blob(r, _) if *method == Method::DELETE => {
            Need::Repo(r, Actions::DELETE)
        }
        E::Manifest(r, _) | E::Blob(r, _) | E::UploadStart(r) | E::Upload(r, _) => {
            Need::Repo(r, Actions::PUSH)
        }
    }
}

/// The scope a client should ask `/auth/token` for.
fn scope_for(repo: &RepoName, action: Actions) -> String {
    // Pushing clients need to read too (existence checks), as docker asks.
    let actions = if action.contains(Actions::PUSH) {
        Actions::PULL.union(Actions::PUSH)
    } else {
        action
    };
    format!("repository:{repo}:{actions}")
}

pub(crate) fn challenge(
    app: &App,
    parts: &Parts,
    scope: Option<&str>,
    insufficient: bool,
    message: &str,
) -> ApiError {
    let base = super::public_base(app, parts);
    let mut value = format!(
        "Bearer realm=\"{base}/auth/token\",service=\"{}\"",
        app.signer.service()
    );
    if let Some(scope) = scope {
        value.push_str(&format!(",scope=\"{scope}\""));
    }
    if insufficient {
        value.push_str(",error=\"insufficient_scope\"");
    }
    ApiError::from(ErrorCode::Unauthorized.msg(message)).header("www-authenticate", value)
}

/// Whole seconds to wait, rounded up: a client that waits as told gets through.
pub(crate) fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_millis().div_ceil(1000) as u64).max(1)
}

pub(crate) fn auth_error(app: &App, parts: &Parts, e: AuthError) -> ApiError {
    match e {
        AuthError::BadCredentials => challenge(
            app,
            parts,
            None,
            false,
            "invalid username, password or token",
        ),
        AuthError::Throttled(wait) => ApiError::from(ErrorCode::TooManyRequests.msg(format!(
            "too many failed logins; try again in {} s",
            retry_after_secs(wait)
        )))
        .header("retry-after", retry_after_secs(wait).to_string()),
        AuthError::Internal(e) => e.into(),
    }
}

/// Identifies the caller and checks they may do what `endpoint` does.
pub async fn authorize(
    app: &App,
    parts: &Parts,
    client: Option<IpAddr>,
    endpoint: &Endpoint,
) -> Result<Caller, ApiError> {
    let caller = authenticate(app, &parts.headers, client)
        .await
        .map_err(|e| auth_error(app, parts, e))?;
    match (&caller, need(&parts.method, endpoint)) {
        (Caller::Open, _) => {}
        (Caller::Anonymous, Need::Authenticated(scope)) => {
            return Err(challenge(
                app,
                parts,
                scope,
                false,
                "authentication required",
            ));
        }
        (Caller::Anonymous, Need::Repo(repo, action)) => {
            return Err(challenge(
                app,
                parts,
                Some(&scope_for(repo, action)),
                false,
                "authentication required",
            ));
        }
        (Caller::User { .. }, Need::Authenticated(_)) => {}
        (Caller::User { .. }, Need::Repo(repo, action)) => {
            if !caller.permitted(repo).contains(action) {
                if caller.permitted_by_rule(repo).contains(action) {
                    return Err(challenge(
                        app,
                        parts,
                        Some(&scope_for(repo, action)),
                        true,
                        "the token does not grant this action; request a token for this scope",
                    ));
                }
                return Err(ErrorCode::Denied.into());
            }
        }
    }
    Ok(caller)
}
