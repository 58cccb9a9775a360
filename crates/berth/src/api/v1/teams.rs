//! `/api/v1/teams`

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::users::Deleted;
use super::{Auth, Error, ErrorBody, Result};
use crate::app::AppState;
use crate::auth::check_name;
use crate::meta::accounts::{AccountKind, Created, MemberChange, Role, Team};

#[utoipa::path(get, path = "/api/v1/teams", tag = "teams", responses(
    (status = 200, body = Vec<Team>, description = "all teams for admins, one's own teams otherwise")))]
pub async fn list(State(app): State<AppState>, auth: Auth) -> Result<Json<Vec<Team>>> {
    let mut teams = app.accounts.teams().await?;
    if !auth.0.is_admin() {
        let me = auth.0.name().unwrap_or_default();
        teams.retain(|t| t.members.iter().any(|m| m.user == me));
    }
    Ok(Json(teams))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    /// Also the team's namespace: a repository path component of at most 64 characters.
    #[schema(pattern = "^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*$", max_length = 64)]
    pub name: String,
}

#[utoipa::path(post, path = "/api/v1/teams", tag = "teams", request_body = NewTeam, responses(
    (status = 201, body = Team), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    auth: Auth,
    Json(req): Json<NewTeam>,
) -> Result<(StatusCode, Json<Team>)> {
    auth.require_admin()?;
    check_name("team", &req.name).map_err(|e| Error::BadRequest(e.to_string()))?;
    match app.accounts.team_create(&req.name).await? {
        Created::Ok(t) => {
            auth.audit(&app, "team_add", &t.name, None).await;
            Ok((StatusCode::CREATED, Json(t)))
        }
        Created::NameTaken => Err(Error::Conflict(format!(
            "the name {:?} is taken by a user or team",
            req.name
        ))),
    }
}

#[utoipa::path(get, path = "/api/v1/teams/{name}", tag = "teams", params(("name" = String, Path)), responses(
    (status = 200, body = Team), (status = 404, body = ErrorBody, description = "no such team, or not a member")))]
pub async fn get(
    State(app): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Team>> {
    let team = app.accounts.team(&name).await?;
    let me = auth.0.name().unwrap_or_default();
    match team {
        Some(t) if auth.0.is_admin() || t.members.iter().any(|m| m.user == me) => Ok(Json(t)),
        _ => Err(Error::NotFound(format!("no team named {name:?}"))),
    }
}

#[utoipa::path(delete, path = "/api/v1/teams/{name}", tag = "teams", params(("name" = String, Path)), responses(
    (status = 200, body = Deleted, description = "the team and every repository of its namespace are gone"),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Deleted>> {
    super::users::delete_account(&app, &auth, &name, AccountKind::Team).await
}

fn member_error(change: MemberChange, team: &str, user: &str) -> Result<StatusCode> {
    match change {
        MemberChange::Done => Ok(StatusCode::NO_CONTENT),
        MemberChange::NoSuchTeam => Err(Error::NotFound(format!("no team named {team:?}"))),
        MemberChange::NoSuchUser => Err(Error::NotFound(format!(
            "no user named {user:?} in this team"
        ))),
    }
}

#[utoipa::path(put, path = "/api/v1/teams/{name}/members/{user}", tag = "teams",
    params(("name" = String, Path), ("user" = String, Path)), responses(
    (status = 204, description = "the user is a member (pull, push, delete in the team's namespace)"),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_member(
    State(app): State<AppState>,
    auth: Auth,
    Path((name, user)): Path<(String, String)>,
) -> Result<StatusCode> {
    auth.require_admin()?;
    let change = app
        .accounts
        .team_member_add(&name, &user, Role::Member)
        .await?;
    if change == MemberChange::Done {
        auth.audit(&app, "member_add", &name, Some(user.clone()))
            .await;
    }
    member_error(change, &name, &user)
}

#[utoipa::path(delete, path = "/api/v1/teams/{name}/members/{user}", tag = "teams",
    params(("name" = String, Path), ("user" = String, Path)), responses(
    (status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_member(
    State(app): State<AppState>,
    auth: Auth,
    Path((name, user)): Path<(String, String)>,
) -> Result<StatusCode> {
    auth.require_admin()?;
    let change = app.accounts.team_member_remove(&name, &user).await?;
    if change == MemberChange::Done {
        auth.audit(&app, "member_rm", &name, Some(user.clone()))
            .await;
    }
    member_error(change, &name, &user)
}
