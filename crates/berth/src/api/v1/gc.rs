//! `/api/v1/gc`, `/api/v1/usage` and `/api/v1/quotas`: the garbage collector, storage
//! use and quotas per namespace.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Auth, Error, ErrorBody, Result};
use crate::app::AppState;
use crate::meta::gc::{GcRun, RetentionRule, Usage};

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Only report what would be deleted.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize, ToSchema)]
pub struct GcStarted {
    pub started: bool,
}

#[utoipa::path(post, path = "/api/v1/gc", tag = "gc", request_body = Option<GcRequest>, responses(
    (status = 202, body = GcStarted, description = "a collection started; follow it in /api/v1/gc/runs"),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "a collection is already running")))]
pub async fn start(
    State(app): State<AppState>,
    auth: Auth,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<GcStarted>)> {
    auth.require_admin()?;
    // The body is optional: nothing (or JSON null) means the defaults.
    let req: Option<GcRequest> = match body.trim_ascii() {
        b"" => None,
        b => serde_json::from_slice(b).map_err(|e| Error::BadRequest(format!("the body: {e}")))?,
    };
    let dry_run = req.map(|r| r.dry_run).unwrap_or(false);
    // Take the lease check up front so the caller learns about a running collection.
    if app.gc.gc_lease_held().await? {
        return Err(Error::Conflict(
            "a garbage collection is already running".into(),
        ));
    }
    auth.audit(&app, "gc", "registry", dry_run.then(|| "dry run".into()))
        .await;
    tokio::spawn(async move {
        let opts = app.gc_options("api", dry_run);
        if let Err(e) = app.collector().run_once(&opts, &|_| {}).await {
            tracing::warn!(error = format!("{e:#}"), "garbage collection failed");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(GcStarted { started: true })))
}

#[utoipa::path(get, path = "/api/v1/gc/runs", tag = "gc", responses(
    (status = 200, body = Vec<GcRun>, description = "newest first"), (status = 403, body = ErrorBody)))]
pub async fn runs(State(app): State<AppState>, auth: Auth) -> Result<Json<Vec<GcRun>>> {
    auth.require_admin()?;
    Ok(Json(app.gc.gc_runs(50).await?))
}

#[utoipa::path(get, path = "/api/v1/usage", tag = "gc", responses(
    (status = 200, body = Usage, description = "admins: the whole registry; others: their namespaces (total_bytes is theirs too)")))]
pub async fn usage(State(app): State<AppState>, auth: Auth) -> Result<Json<Usage>> {
    let mut usage = app.gc.usage().await?;
    if let Some(readable) = auth.0.readable_namespaces() {
        usage.namespaces.retain(|n| readable.contains(&n.namespace));
        usage.total_bytes = usage.namespaces.iter().map(|n| n.bytes).sum();
        usage.blobs = 0;
    }
    Ok(Json(usage))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaRequest {
    /// The most the namespace may store, in bytes (each blob counted once per namespace).
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "super::integer")]
    pub bytes: i64,
}

/// A namespace name: what a user or team name may be (anything else has no namespace).
fn namespace_name(ns: &str) -> Result<()> {
    crate::auth::check_name("namespace", ns).map_err(|e| Error::NotFound(e.to_string()))
}

#[utoipa::path(put, path = "/api/v1/quotas/{namespace}", tag = "gc", request_body = QuotaRequest,
    params(("namespace" = String, Path)), responses(
    (status = 204, description = "pushes that would take the namespace past this are refused before their data is stored; deleting is always allowed"),
    (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "not a namespace name")))]
pub async fn set_quota(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
    Json(req): Json<QuotaRequest>,
) -> Result<StatusCode> {
    auth.require_admin()?;
    namespace_name(&ns)?;
    let bytes = u64::try_from(req.bytes)
        .map_err(|_| Error::BadRequest("a quota must not be negative".into()))?;
    app.gc.quota_set(&ns, Some(bytes)).await?;
    app.quotas.forget_all();
    auth.audit(&app, "quota_set", &ns, Some(bytes.to_string()))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/quotas/{namespace}", tag = "gc",
    params(("namespace" = String, Path)), responses(
    (status = 204, description = "the namespace has no quota any more"), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "not a namespace name")))]
pub async fn remove_quota(
    State(app): State<AppState>,
    auth: Auth,
    Path(ns): Path<String>,
) -> Result<StatusCode> {
    auth.require_admin()?;
    namespace_name(&ns)?;
    app.gc.quota_set(&ns, None).await?;
    app.quotas.forget_all();
    auth.audit(&app, "quota_rm", &ns, None).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/retention", tag = "gc", responses(
    (status = 200, body = Vec<RetentionRule>, description = "the rules the collector applies, oldest first"),
    (status = 403, body = ErrorBody)))]
pub async fn retention_list(
    State(app): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<RetentionRule>>> {
    auth.require_admin()?;
    Ok(Json(app.gc.retention_rules().await?))
}

#[utoipa::path(post, path = "/api/v1/retention", tag = "gc", request_body = RetentionRule, responses(
    (status = 201, body = RetentionRule, description = "applied from the next collection on; POST /api/v1/gc with dry_run previews it"),
    (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn retention_add(
    State(app): State<AppState>,
    auth: Auth,
    Json(mut rule): Json<RetentionRule>,
) -> Result<(StatusCode, Json<RetentionRule>)> {
    auth.require_admin()?;
    rule.check().map_err(Error::BadRequest)?;
    rule.id = app.gc.retention_add(&rule).await?;
    auth.audit(
        &app,
        "retention_add",
        &rule.repositories,
        Some(crate::cli::retention::describe(&rule)),
    )
    .await;
    Ok((StatusCode::CREATED, Json(rule)))
}

#[utoipa::path(delete, path = "/api/v1/retention/{id}", tag = "gc", params(("id" = i64, Path)), responses(
    (status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn retention_remove(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    auth.require_admin()?;
    if !app.gc.retention_remove(id).await? {
        return Err(Error::NotFound(format!("no retention rule {id}")));
    }
    auth.audit(&app, "retention_rm", &id.to_string(), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
