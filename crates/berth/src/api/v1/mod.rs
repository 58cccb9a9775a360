//! The management API behind the UI: users, teams, memberships, access tokens,
//! repositories, tags and the audit log, under `/api/v1/`.
//!
//! Callers authenticate as on `/v2` (HTTP Basic with a password or access token, or a
//! bearer token). Every permission question goes to the access rule (`auth::acl`):
//! account administration is for admins; a repository the caller may not pull answers
//! 404, exactly like a missing one. The OpenAPI document at `/api/v1/openapi.json` is
//! generated from the handlers' annotations ([`ApiDoc`]).

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::{authenticate, AuthError, Caller};

mod audit;
mod gc;
mod repositories;
mod teams;
mod tokens;
mod users;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(users::me))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{name}",
            get(users::get).patch(users::update).delete(users::remove),
        )
        .route("/api/v1/teams", get(teams::list).post(teams::create))
        .route(
            "/api/v1/teams/{name}",
            get(teams::get).delete(teams::remove),
        )
        .route(
            "/api/v1/teams/{name}/members/{user}",
            put(teams::add_member).delete(teams::remove_member),
        )
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{user}/{name}", delete(tokens::revoke))
        .route("/api/v1/repositories", get(repositories::list))
        .route("/api/v1/repositories/{name}", delete(repositories::remove))
        .route("/api/v1/repositories/{name}/tags", get(repositories::tags))
        .route(
            "/api/v1/repositories/{name}/tags/{tag}",
            delete(repositories::remove_tag),
        )
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/gc", axum::routing::post(gc::start))
        .route("/api/v1/gc/runs", get(gc::runs))
        .route("/api/v1/usage", get(gc::usage))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Berth management API",
        description = "Users, teams, access tokens, repositories and tags of a Berth registry. \
                       Repository names contain slashes: percent-encode them in paths (alice%2Fapp).",
    ),
    paths(
        users::me, users::list, users::create, users::get, users::update, users::remove,
        teams::list, teams::create, teams::get, teams::remove, teams::add_member, teams::remove_member,
        tokens::list, tokens::create, tokens::revoke,
        repositories::list, repositories::tags, repositories::remove, repositories::remove_tag,
        audit::list,
        gc::start, gc::runs, gc::usage,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    security(("basic" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

async fn openapi() -> impl IntoResponse {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    Json(doc)
}

/// Every error of this API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code: unauthorized, forbidden, not_found, conflict,
    /// bad_request, too_many_requests, internal.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

#[derive(Debug)]
pub enum Error {
    Unauthorized,
    Forbidden,
    NotFound(String),
    Conflict(String),
    BadRequest(String),
    TooManyRequests(Duration),
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Internal(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Error::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "sign in: HTTP Basic or a bearer token".to_string(),
            ),
            Error::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs an administrator".to_string(),
            ),
            Error::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            Error::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            Error::TooManyRequests(d) => {
                let secs = crate::api::authz::retry_after_secs(d);
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(ErrorBody {
                        error: "too_many_requests".into(),
                        message: format!("too many failed logins; try again in {secs} s"),
                    }),
                )
                    .into_response();
                r.headers_mut().insert("retry-after", secs.into());
                return r;
            }
            Error::Internal(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "internal error in the management API"
                );
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error".to_string(),
                )
            }
        };
        let mut r = (
            status,
            Json(ErrorBody {
                error: code.into(),
                message,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Basic realm=\"berth\""),
            );
        }
        r
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The authenticated caller of a management request, and their address.
pub struct Auth(pub Caller, pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self> {
        let client = super::client_ip(parts);
        match authenticate(app, &parts.headers, client).await {
            Ok(Caller::Anonymous) | Err(AuthError::BadCredentials) => Err(Error::Unauthorized),
            Ok(c) => Ok(Auth(c, client)),
            Err(AuthError::Throttled(d)) => Err(Error::TooManyRequests(d)),
            Err(AuthError::Internal(e)) => Err(Error::Internal(e)),
        }
    }
}

impl Auth {
    pub fn require_admin(&self) -> Result<()> {
        if self.0.is_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    /// Admins, or the user `name` themself.
    pub fn require_self_or_admin(&self, name: &str) -> Result<()> {
        if self.0.is_admin() || self.0.name() == Some(name) {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    pub async fn audit(
        &self,
        app: &crate::app::App,
        action: &str,
        target: &str,
        detail: Option<String>,
    ) {
        let entry = crate::meta::accounts::AuditEntry {
            at: crate::meta::now_ms(),
            actor: self.0.name().map(str::to_string),
            action: action.into(),
            target: Some(target.into()),
            detail,
            client: self.1.map(|c| c.to_string()),
        };
        if let Err(e) = app.accounts.audit(entry).await {
            tracing::warn!(error = %e, action, "could not write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the router is in the generated document.
    #[test]
    fn openapi_document_lists_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/v1/me",
            "/api/v1/users",
            "/api/v1/users/{name}",
            "/api/v1/teams",
            "/api/v1/teams/{name}",
            "/api/v1/teams/{name}/members/{user}",
            "/api/v1/tokens",
            "/api/v1/tokens/{user}/{name}",
            "/api/v1/repositories",
            "/api/v1/repositories/{name}",
            "/api/v1/repositories/{name}/tags",
            "/api/v1/repositories/{name}/tags/{tag}",
            "/api/v1/audit",
            "/api/v1/gc",
            "/api/v1/gc/runs",
            "/api/v1/usage",
        ] {
            assert!(
                paths.contains_key(p),
                "{p} missing from the OpenAPI document"
            );
        }
        assert_eq!(paths.len(), 16);
    }
}
