//! `/auth/token`: the Docker token authentication flow.
//!
//! `GET /auth/token?service=…&scope=…` with HTTP Basic credentials (a password, or an
//! access token as the password), or the OAuth2 form `POST` (`grant_type=password`)
//! that containerd and others use. Each requested repository scope is granted only the
//! actions the access rule allows; a downgraded grant is not an error. `*` is granted
//! when every action is allowed.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use oci::{ErrorCode, RepoName};
use serde_json::json;

use super::authz::auth_error;
use super::error::ApiError;
use crate::app::AppState;
use crate::auth::acl::{Actions, Principal};
use crate::auth::jwt::Access;
use crate::auth::{basic_credentials, login};

/// Grants for the requested scopes (`type:name:actions`, several per parameter when
/// separated by spaces).
fn grants(principal: &Principal, scopes: &[String]) -> Vec<Access> {
    let mut out: Vec<Access> = Vec::new();
    for scope in scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
    {
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        match kind {
            "repository" => {
                let Ok(repo) = name.parse::<RepoName>() else {
                    continue;
                };
                let asked: Vec<&str> = actions.split(',').collect();
                let requested = asked
                    .iter()
                    .fold(Actions::NONE, |a, w| a.union(Actions::parse_one(w)));
                let granted = requested.intersect(principal.permitted(repo.namespace()));
                let mut words: Vec<String> =
                    granted.words().into_iter().map(String::from).collect();
                if asked.contains(&"*") && granted == Actions::ALL {
                    words.push("*".into());
                }
                if !words.is_empty() {
                    out.push(Access {
                        kind: kind.into(),
                        name: repo.to_string(),
                        actions: words,
                    });
                }
            }
            // Listing is filtered by the rule, so every signed-in user may ask.
            "registry" if name == "catalog" => out.push(Access {
                kind: kind.into(),
                name: name.into(),
                actions: vec!["*".into()],
            }),
            _ => {}
        }
    }
    out
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::from(ErrorCode::Unauthorized.msg(message))
        .header("www-authenticate", "Basic realm=\"berth\"")
}

pub async fn token(State(app): State<AppState>, req: Request) -> Response {
    match issue(app, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn issue(app: AppState, req: Request) -> Result<Response, ApiError> {
    if !app.config.auth.enabled {
        return Err(ErrorCode::Unsupported
            .msg("authentication is disabled on this registry; no token is needed")
            .into());
    }
    let (parts, body) = req.into_parts();
    let client = super::client_ip(&parts);
    let mut params: Vec<(String, String)> = parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    if parts.method == Method::POST {
        let bytes = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| {
            ErrorCode::Unsupported.msg("token request body too large or unreadable")
        })?;
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| ErrorCode::Unsupported.msg("token request body is not a form"))?;
        params.extend(form);
    }
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(service) = param("service") {
        if service != app.signer.service() {
            return Err(ErrorCode::Unsupported
                .msg(format!(
                    "this registry's token service is {:?}, not {service:?}",
                    app.signer.service()
                ))
                .into());
        }
    }
    let credentials = match param("grant_type") {
        Some("password") => param("username").zip(param("password")).map(|(u, p)| (u.to_string(), p.to_string())),
        Some(other) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": "unsupported_grant_type", "error_description": format!("grant_type {other:?} is not supported") })),
            )
                .into_response())
        }
        None => basic_credentials(&parts.headers),
    };
    let Some((user, secret)) = credentials else {
        return Err(unauthorized(
            "sign in with your user name and password or an access token",
        ));
    };
    let login = login(&app, &user, &secret, client)
        .await
        .map_err(|e| match e {
            crate::auth::AuthError::BadCredentials => {
                unauthorized("invalid username, password or token")
            }
            e => auth_error(&app, &parts, e),
        })?;
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let access = grants(&login.principal, &scopes);
    let p = &login.principal;
    let issued = app.signer.issue(&p.name, p.id, login.token_id, access)?;
    app.accounts.user_logged_in(p.id).await?;
    app.accounts
        .audit(crate::meta::accounts::AuditEntry {
            at: crate::meta::now_ms(),
            actor: Some(p.name.clone()),
            action: "login".into(),
            target: None,
            detail: Some(
                if login.token_id.is_some() {
                    "access token"
                } else {
                    "password"
                }
                .into(),
            ),
            client: client.map(|c| c.to_string()),
        })
        .await?;
    let issued_at = time::OffsetDateTime::from(issued.issued_at)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(anyhow::Error::from)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued_at,
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::accounts::Role;

    #[test]
    fn grants_are_downgraded_to_the_rule() {
        let alice = Principal {
            id: 1,
            name: "alice".into(),
            admin: false,
            teams: vec![("web".into(), Role::Member)],
        };
        let g = grants(
            &alice,
            &[
                "repository:alice/app:pull,push".into(),
                "repository:bob/app:pull".into(),
                "repository:web/site:*".into(),
                "repository:BAD:pull registry:catalog:*".into(),
            ],
        );
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].actions, vec!["pull", "push"]);
        assert_eq!(g[1].name, "web/site");
        assert_eq!(g[1].actions, vec!["pull", "push", "delete", "*"]);
        assert_eq!(g[2].kind, "registry");
    }
}
