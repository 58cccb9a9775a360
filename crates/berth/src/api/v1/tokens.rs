//! `/api/v1/tokens`: access tokens for CI and robots.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Auth, Error, ErrorBody, Result};
use crate::app::AppState;
use crate::auth::{check_token_name, new_token_secret, password};
use crate::config::parse_duration;
use crate::meta::accounts::{AccessToken, Created};
use crate::meta::now_ms;

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only this user's tokens (admins); others always see their own.
    pub user: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(ListQuery), responses(
    (status = 200, body = Vec<AccessToken>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<AccessToken>>> {
    let user = if auth.0.is_admin() {
        q.user
    } else {
        auth.0.name().map(str::to_string)
    };
    Ok(Json(app.accounts.tokens(user.as_deref()).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1 to 64 printable characters but `/` (and not `.` or `..`), unique among the
    /// user's tokens.
    #[schema(
        pattern = "^(?!\\.{1,2}$)[^\\x00-\\x1F\\x7F-\\x9F/]+$",
        min_length = 1,
        max_length = 64
    )]
    pub name: String,
    /// Whose token (admins only); default: the caller.
    pub user: Option<String>,
    /// Lifetime such as "30d" or "12h"; omitted: until revoked.
    #[schema(pattern = "^[0-9]{1,6}(s|m|h|d)$")]
    pub expires_in: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: AccessToken,
    /// The secret, shown only here: use it as the password in `docker login`.
    pub secret: String,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken, responses(
    (status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody, description = "no such user"), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    auth: Auth,
    Json(req): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>)> {
    let user = match (&req.user, auth.0.name()) {
        (Some(u), _) => {
            auth.require_self_or_admin(u)?;
            u.clone()
        }
        (None, Some(me)) => me.to_string(),
        (None, None) => return Err(Error::BadRequest("name the user the token is for".into())),
    };
    check_token_name(&req.name).map_err(|e| Error::BadRequest(e.to_string()))?;
    let expires_at = match &req.expires_in {
        Some(d) => {
            Some(now_ms() + parse_duration(d).map_err(Error::BadRequest)?.as_millis() as i64)
        }
        None => None,
    };
    let (u, _) = app
        .accounts
        .user_by_name(&user)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no user named {user:?}")))?;
    let secret = new_token_secret();
    match app
        .accounts
        .token_create(u.id, &req.name, &password::secret_hash(&secret), expires_at)
        .await?
    {
        Created::Ok(token) => {
            auth.audit(&app, "token_create", &user, Some(req.name.clone()))
                .await;
            Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
        }
        Created::NameTaken => Err(Error::Conflict(format!(
            "{user} already has a token named {:?}",
            req.name
        ))),
    }
}

#[utoipa::path(delete, path = "/api/v1/tokens/{user}/{name}", tag = "tokens",
    params(("user" = String, Path), ("name" = String, Path)), responses(
    (status = 204, description = "revoked: it stops working at once"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(app): State<AppState>,
    auth: Auth,
    Path((user, name)): Path<(String, String)>,
) -> Result<StatusCode> {
    auth.require_self_or_admin(&user)?;
    if !app.accounts.token_revoke(&user, &name).await? {
        return Err(Error::NotFound(format!(
            "{user} has no token named {name:?}"
        )));
    }
    auth.audit(&app, "token_revoke", &user, Some(name)).await;
    Ok(StatusCode::NO_CONTENT)
}
