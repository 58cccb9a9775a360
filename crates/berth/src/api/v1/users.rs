//! `/api/v1/users`, `/api/v1/me`

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Auth, Error, ErrorBody, Result};
use crate::app::AppState;
use crate::auth::{check_name, check_password, password, Caller};
use crate::meta::accounts::{AccountKind, Created, User};

#[derive(Serialize, ToSchema)]
pub struct Me {
    /// Empty when authentication is off.
    pub name: String,
    pub admin: bool,
    pub teams: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "users", responses(
    (status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(auth: Auth) -> Json<Me> {
    Json(match &auth.0 {
        Caller::User { principal, .. } => Me {
            name: principal.name.clone(),
            admin: principal.admin,
            teams: principal.teams.iter().map(|(t, _)| t.clone()).collect(),
        },
        _ => Me {
            name: String::new(),
            admin: auth.0.is_admin(),
            teams: Vec::new(),
        },
    })
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", responses(
    (status = 200, body = Vec<User>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(State(app): State<AppState>, auth: Auth) -> Result<Json<Vec<User>>> {
    auth.require_admin()?;
    Ok(Json(app.accounts.users().await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Also the user's namespace: a repository path component of at most 64 characters.
    #[schema(pattern = "^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*$", max_length = 64)]
    pub name: String,
    /// 8 to 1024 characters; omitted: a random password is generated and returned once.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedUser {
    pub user: User,
    /// The generated password, when none was given (shown only here).
    pub password: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser, responses(
    (status = 201, body = CreatedUser), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "the name is taken by a user or team")))]
pub async fn create(
    State(app): State<AppState>,
    auth: Auth,
    Json(req): Json<NewUser>,
) -> Result<(StatusCode, Json<CreatedUser>)> {
    auth.require_admin()?;
    check_name("user", &req.name).map_err(|e| Error::BadRequest(e.to_string()))?;
    let (pw, generated) = match req.password {
        Some(p) => {
            check_password(&p).map_err(|e| Error::BadRequest(e.to_string()))?;
            (p, false)
        }
        None => (password::random_password(), true),
    };
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw).map(|h| (h, pw)))
        .await
        .map_err(anyhow::Error::from)??;
    match app
        .accounts
        .user_create(&req.name, &hash.0, req.admin)
        .await?
    {
        Created::Ok(user) => {
            auth.audit(
                &app,
                "user_add",
                &user.name,
                req.admin.then(|| "admin".into()),
            )
            .await;
            Ok((
                StatusCode::CREATED,
                Json(CreatedUser {
                    user,
                    password: generated.then_some(hash.1),
                }),
            ))
        }
        Created::NameTaken => Err(Error::Conflict(format!(
            "the name {:?} is taken by a user or team",
            req.name
        ))),
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserDetail {
    pub user: User,
    pub teams: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users", params(("name" = String, Path)), responses(
    (status = 200, body = UserDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<UserDetail>> {
    auth.require_self_or_admin(&name)?;
    let (user, _) = app
        .accounts
        .user_by_name(&name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no user named {name:?}")))?;
    let teams = app
        .accounts
        .user_teams(user.id)
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    Ok(Json(UserDetail { user, teams }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// New password, 8 to 1024 characters (admins, or the user themself).
    #[schema(min_length = 8, max_length = 1024)]
    pub password: Option<String>,
    /// Grant or take away administrator rights (admins only).
    pub admin: Option<bool>,
}

#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users", params(("name" = String, Path)), request_body = UserUpdate, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(app): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Json(req): Json<UserUpdate>,
) -> Result<StatusCode> {
    auth.require_self_or_admin(&name)?;
    if req.admin.is_some() {
        auth.require_admin()?;
    }
    let missing = || Error::NotFound(format!("no user named {name:?}"));
    if req.password.is_some() && auth.2 && auth.0.name() == Some(name.as_str()) {
        // A session cookie does not prove the password: changing one's own needs it
        // (the web UI's Account page asks for it; API clients use their credentials).
        return Err(Error::Forbidden);
    }
    if let Some(p) = req.password {
        check_password(&p).map_err(|e| Error::BadRequest(e.to_string()))?;
        let hash = tokio::task::spawn_blocking(move || password::hash(&p))
            .await
            .map_err(anyhow::Error::from)??;
        if !app.accounts.user_set_password(&name, &hash).await? {
            return Err(missing());
        }
        // Whoever knew the old password is signed out of the web UI everywhere.
        app.accounts.sessions_delete_user(&name, None).await?;
        auth.audit(&app, "user_passwd", &name, None).await;
    }
    if let Some(admin) = req.admin {
        if !app.accounts.user_set_admin(&name, admin).await? {
            return Err(missing());
        }
        auth.audit(
            &app,
            if admin { "admin_grant" } else { "admin_revoke" },
            &name,
            None,
        )
        .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// Repositories of the namespace that went with the account.
    pub repositories_deleted: u64,
}

#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users", params(("name" = String, Path)), responses(
    (status = 200, body = Deleted, description = "the user and every repository of their namespace are gone"),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Deleted>> {
    delete_account(&app, &auth, &name, AccountKind::User).await
}

/// Deletes a user or team with its namespace (admins only), and audits it.
pub(super) async fn delete_account(
    app: &crate::app::App,
    auth: &Auth,
    name: &str,
    kind: AccountKind,
) -> Result<Json<Deleted>> {
    auth.require_admin()?;
    let n = app
        .accounts
        .account_delete(name, kind)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no {} named {name:?}", kind.as_str())))?;
    let action = format!("{}_rm", kind.as_str());
    auth.audit(app, &action, name, Some(format!("{n} repositories")))
        .await;
    Ok(Json(Deleted {
        repositories_deleted: n,
    }))
}
