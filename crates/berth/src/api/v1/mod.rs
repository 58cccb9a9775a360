//! The management API behind the UI: users, teams, memberships, access tokens,
//! repositories, tags and the audit log, under `/api/v1/`.
//!
//! Callers authenticate as on `/v2` (HTTP Basic with a password or access token, or a
//! bearer token), or with the web UI's session cookie (changes then need the session's
//! CSRF token in `X-CSRF-Token`). Every permission question goes to the access rule (`auth::acl`):
//! account administration is for admins; a repository the caller may not pull answers
//! 404, exactly like a missing one. The OpenAPI document at `/api/v1/openapi.json` is
//! generated from the handlers' annotations ([`ApiDoc`]), with the answers every
//! operation can give (400, 401, 429) added once; every error, axum's own refusals
//! included, is [`ErrorBody`] JSON, and request bodies must be JSON objects.
//! tests/e2e/test_openapi.py holds the document and the server to each other with
//! Schemathesis.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::app::AppState;
use crate::auth::{authenticate, AuthError, Caller};

pub(crate) mod audit;
pub(crate) mod gc;
pub(crate) mod repositories;
pub(crate) mod teams;
pub(crate) mod tokens;
pub(crate) mod users;

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
        .route(
            "/api/v1/repositories/{name}/manifests/{digest}",
            delete(repositories::remove_manifest),
        )
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/gc", axum::routing::post(gc::start))
        .route("/api/v1/gc/runs", get(gc::runs))
        .route("/api/v1/usage", get(gc::usage))
        .route(
            "/api/v1/retention",
            get(gc::retention_list).post(gc::retention_add),
        )
        .route("/api/v1/retention/{id}", delete(gc::retention_remove))
        .route(
            "/api/v1/quotas/{namespace}",
            put(gc::set_quota).delete(gc::remove_quota),
        )
        .layer(axum::middleware::map_response(json_rejections))
        .layer(axum::middleware::from_fn(json_objects))
}

/// Request bodies of this API are JSON objects. serde would read a struct from an
/// array too (positionally), so anything but an object is refused up front.
async fn json_objects(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let has_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let is_json = has_body
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return Error::BadRequest("the body is larger than 1 MiB".into()).into_response();
    };
    let text = bytes.trim_ascii();
    if !text.is_empty() && text[0] != b'{' && text != b"null" {
        return Error::BadRequest("the body must be a JSON object".into()).into_response();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// axum's own refusals (a path segment that is not a number, a query or body that does
/// not deserialize, a body that is not JSON) are plain text with 400, 415 or 422; this
/// API answers every error with [`ErrorBody`] JSON, so they become 400 `bad_request`
/// with axum's explanation as the message.
async fn json_rejections(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() || is_json {
        return r;
    }
    let body = axum::body::to_bytes(r.into_body(), 16 * 1024)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_string();
    let (status, code) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (status, "method_not_allowed"),
        StatusCode::NOT_FOUND => (status, "not_found"),
        StatusCode::PAYLOAD_TOO_LARGE => (status, "too_large"),
        _ => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    let message = if message.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_lowercase()
    } else {
        message
    };
    (
        status,
        Json(ErrorBody {
            error: code.into(),
            message,
        }),
    )
        .into_response()
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
        repositories::remove_manifest,
        audit::list,
        gc::start, gc::runs, gc::usage, gc::set_quota, gc::remove_quota,
        gc::retention_list, gc::retention_add, gc::retention_remove,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    security(("basic" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        common_responses(doc);
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

/// Answers every operation can give, documented once here rather than on each: 401
/// (no or wrong credentials), 429 (too many failed sign-ins), and 400 wherever the
/// request has parameters or a body.
fn common_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, ResponseBuilder};
    let error = |what: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            let has_input =
                op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let r = &mut op.responses.responses;
            if has_input {
                r.entry("400".into())
                    .or_insert_with(|| error("the request is malformed"));
            }
            r.entry("401".into())
                .or_insert_with(|| error("no credentials, or wrong ones"));
            r.entry("429".into()).or_insert_with(|| {
                error("too many failed sign-ins from this client or for this user")
            });
        }
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
    /// A change through the UI's session without the session's CSRF token.
    Csrf,
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

impl Error {
    /// What went wrong, for people.
    pub fn message(&self) -> String {
        match self {
            Error::Unauthorized => "sign in: HTTP Basic or a bearer token".into(),
            Error::Forbidden => "this needs an administrator".into(),
            Error::Csrf => {
                "the form expired or came from another site: reload the page and try again \
                           (API calls with the UI's session send its token in X-CSRF-Token)"
                    .into()
            }
            Error::NotFound(m) | Error::Conflict(m) | Error::BadRequest(m) => m.clone(),
            Error::TooManyRequests(d) => format!(
                "too many failed sign-ins; try again in {} s",
                crate::api::authz::retry_after_secs(*d)
            ),
            Error::Internal(_) => "internal server error".into(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let message = self.message();
        let (status, code) = match &self {
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden | Error::Csrf => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Error::Internal(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "internal error in the management API"
                );
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
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
        match self {
            Error::Unauthorized => {
                r.headers_mut().insert(
                    "www-authenticate",
                    axum::http::HeaderValue::from_static("Basic realm=\"berth\""),
                );
            }
            Error::TooManyRequests(d) => {
                let secs = crate::api::authz::retry_after_secs(d);
                r.headers_mut().insert("retry-after", secs.into());
            }
            _ => {}
        }
        r
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// An integer field of a request body: JSON Schema counts `5.0` as an integer, so
/// integral floats are accepted too.
pub(crate) fn integer<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::Error as _;
    let n = serde_json::Number::deserialize(d)?;
    let i = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i,
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
        _ => return Err(D::Error::custom(format!("{n} is not an integer in range"))),
    };
    T::try_from(i).map_err(|_| D::Error::custom(format!("{i} is out of range")))
}

/// [`integer`] for optional fields.
pub(crate) fn opt_integer<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    #[derive(serde::Deserialize)]
    struct Wrap<T: TryFrom<i64>>(#[serde(deserialize_with = "integer")] T);
    Ok(Option::<Wrap<T>>::deserialize(d)?.map(|w| w.0))
}

/// A page size from a query: `default` when absent, at most `max`; negative is an error.
pub(crate) fn page_size(n: Option<i64>, default: u32, max: u32) -> Result<u32> {
    match n {
        None => Ok(default),
        Some(n) if n < 0 => Err(Error::BadRequest(format!(
            "a page size must not be negative (got {n})"
        ))),
        Some(n) => Ok(n.clamp(1, i64::from(max)) as u32),
    }
}

/// The authenticated caller of a management request, and their address.
///
/// The third field is true when the caller came in with the web UI's session cookie
/// rather than credentials: such a caller has not proven it knows the password.
pub struct Auth(pub Caller, pub Option<std::net::IpAddr>, pub bool);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self> {
        let client = super::client_ip(parts);
        if app.config.auth.enabled && !parts.headers.contains_key(header::AUTHORIZATION) {
            // The UI's session: changes need its CSRF token in a header, which another
            // site's page can't send.
            if let Some(s) = crate::web::session::from_cookies(app, &parts.headers).await? {
                let safe = matches!(parts.method, Method::GET | Method::HEAD);
                let token = parts.headers.get("x-csrf-token").map(|v| v.as_bytes());
                if !safe && !token.is_some_and(|t| crate::web::session::same(t, s.csrf.as_bytes()))
                {
                    return Err(Error::Csrf);
                }
                return Ok(Auth(s.caller, client, true));
            }
        }
        match authenticate(app, &parts.headers, client).await {
            Ok(Caller::Anonymous) | Err(AuthError::BadCredentials) => Err(Error::Unauthorized),
            Ok(c) => Ok(Auth(c, client, false)),
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
            "/api/v1/repositories/{name}/manifests/{digest}",
            "/api/v1/audit",
            "/api/v1/gc",
            "/api/v1/gc/runs",
            "/api/v1/usage",
            "/api/v1/quotas/{namespace}",
            "/api/v1/retention",
            "/api/v1/retention/{id}",
        ] {
            assert!(
                paths.contains_key(p),
                "{p} missing from the OpenAPI document"
            );
        }
        assert_eq!(paths.len(), 20);
    }
}
