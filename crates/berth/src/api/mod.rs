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

pub(crate) mod authz;
mod blobs;
mod discovery;
pub mod error;
pub(crate) mod manifests;
pub mod metrics;
pub use oci::route;
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
        .merge(
            // Their bodies are read whole by extractors: a stalled one is cut off like
            // a stalled upload (limits.body_idle_timeout).
            v1::router().merge(crate::web::router()).layer(
                tower_http::timeout::RequestBodyTimeoutLayer::new(
                    app.config.limits.body_idle_timeout.get(),
                ),
            ),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            metrics::count,
        ))
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
    body: BodySlot,
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

    /// The request body as a byte stream (once; later calls get an empty body). A body
    /// that sends nothing for `limits.body_idle_timeout` ends with a `TimedOut` error.
    pub fn take_body(&self) -> ByteStream {
        let body = self.body.lock().unwrap().take().unwrap_or_default();
        let idle = self.app.config.limits.body_idle_timeout.get();
        let data: ByteStream = Box::pin(body.into_data_stream().map_err(io::Error::other));
        Box::pin(futures_util::stream::unfold(
            Some(data),
            move |state| async move {
                use futures_util::StreamExt;
                let mut s = state?;
                match tokio::time::timeout(idle, s.next()).await {
                    Ok(Some(item)) => Some((item, Some(s))),
                    Ok(None) => None,
                    // The stream ends after the error.
                    Err(_) => Some((
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the client sent nothing for {} s", idle.as_secs_f64()),
                        )),
                        None,
                    )),
                }
            },
        ))
    }

    /// Who owns an upload session this caller opens: the account, or the client
    /// address without one.
    pub fn upload_owner(&self) -> String {
        match (self.caller.name(), self.client) {
            (Some(n), _) => format!("user:{n}"),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "anonymous".into(),
        }
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

    /// A check, run inside the metadata transaction, that `digest`'s file exists.
    pub fn presence(&self, digest: &oci::Digest) -> crate::meta::Presence<'static> {
        use futures_util::FutureExt;
        let (blobs, d) = (self.app.blobs.clone(), digest.clone());
        async move { Ok(blobs.stat(&d).await?.is_some()) }.boxed()
    }

    /// Records a blob now in the store as part of `repo`, closing the upload session
    /// that produced it, if any; run again if a concurrent transaction aborted it.
    pub async fn link_blob(
        &self,
        repo: &oci::RepoName,
        digest: &oci::Digest,
        size: u64,
        upload: Option<uuid::Uuid>,
    ) -> Result<(), error::ApiError> {
        let link = || {
            self.app
                .meta
                .link_blob(repo, digest, size, self.presence(digest), upload)
        };
        match crate::meta::retry_conflicts(link).await? {
            crate::meta::Linked::Linked => Ok(()),
            crate::meta::Linked::Vanished => Err(ErrorCode::BlobUploadInvalid
                .msg("the blob was deleted by garbage collection while this push completed; push it again")
                .into()),
        }
    }

    /// Refuses to let `repo`'s namespace grow by `adding` bytes past its quota (no
    /// quota: no check). `digest`, when known, is what would be linked: one the
    /// namespace already holds adds nothing. Checked per request, before the data is
    /// stored; concurrent pushes can overshoot by what they have in flight.
    pub async fn check_quota(
        &self,
        repo: &oci::RepoName,
        adding: u64,
        digest: Option<&oci::Digest>,
    ) -> Result<(), error::ApiError> {
        let ns = repo.namespace();
        let quota = match self.app.quotas.get(ns) {
            Some(q) => q,
            None => {
                let q = self.app.gc.quota(ns).await?;
                self.app.quotas.insert(ns.to_string(), q);
                q
            }
        };
        let Some(quota) = quota else {
            return Ok(());
        };
        let (used, has) = self.app.gc.namespace_bytes(ns, digest).await?;
        if has || used.saturating_add(adding) <= quota {
            return Ok(());
        }
        use crate::human::bytes;
        Err(ErrorCode::Denied
            .msg(format!(
                "storage quota exceeded: namespace {ns} uses {} of its {} quota, and this push needs {} more; \
                 delete images (the next garbage collection frees their space) or ask an administrator for a larger quota",
                bytes(used),
                bytes(quota),
                bytes(adding)
            ))
            .into())
    }

    /// `Content-Length` of the request, if announced.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|l| l.trim().parse().ok())
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
/// host of the request (`Host`, or HTTP/2's `:authority`).
pub(crate) fn public_base(app: &crate::app::App, parts: &axum::http::request::Parts) -> String {
    let configured = app.config.server.public_url.trim_end_matches('/');
    if !configured.is_empty() {
        return configured.to_string();
    }
    let host = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .filter(|h| !h.is_empty() && !h.contains(['"', ' ', '/', '@']))
        .unwrap_or("localhost");
    let scheme = parts
        .headers
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

/// The request body, where the handler takes it from; whatever is left when an error
/// is answered gets drained.
type BodySlot = std::sync::Arc<std::sync::Mutex<Option<Body>>>;

/// Reads and discards what a client is still sending (at most 1 MiB, 500 ms), so that
/// closing the connection after an early error answer doesn't reset it under the
/// client's feet (a socket closed with unread data sends RST, and over TLS clients then
/// lose the answer).
async fn drain(body: Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut left: usize = 1 << 20;
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        while let Some(Ok(chunk)) = stream.next().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

async fn v2(State(app): State<AppState>, req: Request) -> Response {
    // An error answered before the request body was read leaves unread bytes on an
    // HTTP/1.1 connection, which hyper then closes: say so, or the client would reuse
    // it for its next request and fail.
    let announced_body = req.version() == axum::http::Version::HTTP_11
        && (req
            .headers()
            .contains_key(axum::http::header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .is_some_and(|l| l.as_bytes() != b"0"));
    let (parts, body) = req.into_parts();
    let slot: BodySlot = std::sync::Arc::new(std::sync::Mutex::new(Some(body)));
    let mut resp = handle_v2(app, parts, slot.clone())
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if resp.status().is_client_error() || resp.status().is_server_error() {
        let unread = slot.lock().unwrap().take();
        if let Some(body) = unread {
            drain(body).await;
        }
        if announced_body {
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
    }
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// Parse, authenticate and authorise, then handle.
async fn handle_v2(app: AppState, parts: axum::http::request::Parts, body: BodySlot) -> ApiResult {
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
        body,
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
