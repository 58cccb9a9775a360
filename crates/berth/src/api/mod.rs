//! The HTTP surface: `/v2/…` (OCI Distribution v1.1), health endpoints.
//!
//! Dependency direction: this module parses and answers HTTP; it asks `meta` (which
//! repository has what) and `blobstore` (bytes). Every `/v2` request goes through one
//! catch-all route, is parsed into an [`route::Endpoint`], and is dispatched on
//! (method, endpoint); anything unmatched is an OCI error, never a bare 404/405.

use std::io;
use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use blobstore::ByteStream;
use futures_util::TryStreamExt;
use oci::ErrorCode;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::app::AppState;
use crate::auth::Caller;

mod authz;
mod blobs;
mod discovery;
pub mod error;
mod manifests;
pub mod route;
mod token;
mod uploads;
pub mod v1;

use error::ApiResult;
use route::Endpoint;

pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/v2", any(v2))
        .route("/v2/", any(v2))
        .route("/v2/{*rest}", any(v2))
        .route("/auth/token", get(token::token).post(token::token))
        .merge(v1::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .with_state(app)
}

async fn readyz(State(app): State<AppState>) -> Response {
    match app.meta.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metadata database not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "metadata database unavailable",
            )
                .into_response()
        }
    }
}

/// What a handler gets from the request.
pub(crate) struct Ctx {
    pub app: AppState,
    pub caller: Caller,
    pub client: Option<IpAddr>,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    /// Behind a mutex only so that `&Ctx` is `Sync` (a body is `Send` but not `Sync`)
    /// and handlers' futures stay `Send`; nothing contends for it.
    body: std::sync::Mutex<Option<Body>>,
}

impl Ctx {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The request body as a byte stream (once; later calls get an empty body).
    pub fn take_body(&self) -> ByteStream {
        let body = self.body.lock().unwrap().take().unwrap_or_default();
        Box::pin(body.into_data_stream().map_err(io::Error::other))
    }

    /// A URL for `path` (starting with `/`): absolute under `server.public_url` when
    /// configured, else relative (the spec allows both in `Location`).
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}{}",
            self.app.config.server.public_url.trim_end_matches('/'),
            path
        )
    }

    /// Records an audited action of this caller.
    pub async fn audit(&self, action: &str, target: String) {
        let entry = crate::meta::accounts::AuditEntry {
            at: crate::meta::now_ms(),
            actor: self.caller.name().map(str::to_string),
            action: action.to_string(),
            target: Some(target),
            detail: None,
            client: self.client.map(|c| c.to_string()),
        };
        if let Err(e) = self.app.accounts.audit(entry).await {
            tracing::warn!(error = %e, action, "could not write the audit log");
        }
    }
}

/// The registry's base URL as clients see it: `server.public_url`, or the scheme and
/// `Host` of the request.
pub(crate) fn public_base(app: &crate::app::App, headers: &HeaderMap) -> String {
    let configured = app.config.server.public_url.trim_end_matches('/');
    if !configured.is_empty() {
        return configured.to_string();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['"', ' ', '/']))
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or(if app.config.server.tls_cert.is_empty() {
            "http"
        } else {
            "https"
        });
    format!("{scheme}://{host}")
}

/// The client's address, when the server was started with connection info.
pub(crate) fn client_ip(parts: &axum::http::request::Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

async fn v2(State(app): State<AppState>, req: Request) -> Response {
    let mut resp = handle_v2(app, req)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// Parse, authenticate and authorise, then handle.
async fn handle_v2(app: AppState, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    let client = client_ip(&parts);
    let endpoint = route::parse(parts.uri.path())?;
    let caller = authz::authorize(&app, &parts, client, &endpoint).await?;
    let query = parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default();
    let ctx = Ctx {
        app,
        caller,
        client,
        method: parts.method,
        headers: parts.headers,
        query,
        body: std::sync::Mutex::new(Some(body)),
    };
    dispatch(ctx, endpoint).await
}

async fn dispatch(ctx: Ctx, endpoint: Endpoint) -> ApiResult {
    use Endpoint as E;
    let m = ctx.method.clone();
    match (m, endpoint) {
        (Method::GET | Method::HEAD, E::Base) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()),
        (Method::GET, E::Catalog) => discovery::catalog(ctx).await,
        (Method::GET, E::Tags(repo)) => discovery::tags(ctx, repo).await,
        (Method::GET, E::Referrers(repo, d)) => discovery::referrers(ctx, repo, d).await,
        (Method::GET | Method::HEAD, E::Manifest(repo, r)) => manifests::get(ctx, repo, r).await,
        (Method::PUT, E::Manifest(repo, r)) => manifests::put(ctx, repo, r).await,
        (Method::DELETE, E::Manifest(repo, r)) => manifests::delete(ctx, repo, r).await,
        (Method::GET | Method::HEAD, E::Blob(repo, d)) => blobs::get(ctx, repo, d).await,
        (Method::DELETE, E::Blob(repo, d)) => blobs::delete(ctx, repo, d).await,
        (Method::POST, E::UploadStart(repo)) => uploads::start(ctx, repo).await,
        (Method::GET, E::Upload(repo, id)) => uploads::status(ctx, repo, id).await,
        (Method::PATCH, E::Upload(repo, id)) => uploads::patch(ctx, repo, id).await,
        (Method::PUT, E::Upload(repo, id)) => uploads::finish(ctx, repo, id).await,
        (Method::DELETE, E::Upload(repo, id)) => uploads::cancel(ctx, repo, id).await,
        (m, _) => Err(ErrorCode::MethodNotAllowed
            .msg(format!("{m} is not supported on this endpoint"))
            .into()),
    }
}

/// `Range` header value for an upload of `size` bytes (inclusive end; `0-0` when empty,
/// as the spec's examples and clients expect).
pub(crate) fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}
