//! `/api/v1/audit`: who did what, when, from where (admins).

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{Auth, ErrorBody, Result};
use crate::app::AppState;
use crate::meta::accounts::AuditEntry;

#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Entries before this time (Unix milliseconds), for paging back.
    pub before: Option<i64>,
    /// At most this many (default 100; more than 1000 counts as 1000).
    #[param(minimum = 0)]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery), responses(
    (status = 200, body = Vec<AuditEntry>, description = "newest first: logins, failed logins, pushes, deletes, account changes"),
    (status = 403, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    auth: Auth,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>> {
    auth.require_admin()?;
    let limit = super::page_size(q.limit, 100, 1000)?;
    Ok(Json(app.accounts.audit_log(q.before, limit).await?))
}
