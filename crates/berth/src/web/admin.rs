//! Admin → Registry (storage, garbage collector), users and teams. Every action calls
//! the management API's handler with the session's caller: the rule lives there.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Form, Json};
use serde::Deserialize;

use super::images::{repo_url, ConfirmPage, RepoRow};
use super::session::CsrfForm;
use super::{Chrome, PageResult, Web};
use crate::api::v1::{gc, teams, tokens, users};
use crate::app::AppState;
use crate::human::{ago, bytes, duration, seg, when};
use crate::meta::accounts::{AccessToken, User};

pub struct NamespaceRow {
    pub name: String,
    pub bytes: String,
    pub repositories: u64,
    /// "2.0 GiB (45%)", or empty without a quota.
    pub quota: String,
    pub over: bool,
    /// Bar length in the chart, 0–100.
    pub bar: u64,
    pub y: usize,
}

pub struct RunRow {
    pub started: String,
    pub started_ago: String,
    pub trigger: String,
    pub dry_run: bool,
    pub took: String,
    pub manifests: u64,
    pub blobs: u64,
    pub freed: String,
    pub uploads: u64,
    pub error: String,
    pub running: bool,
}

#[derive(Template)]
#[template(path = "admin_registry.html")]
struct RegistryPage {
    chrome: Chrome,
    total: String,
    blobs: u64,
    repositories: u64,
    namespaces: Vec<NamespaceRow>,
    chart: Vec<NamespaceRow>,
    chart_height: usize,
    runs: Vec<RunRow>,
    running: bool,
    interval: String,
    grace: String,
    untagged: String,
    rules: Vec<RuleRow>,
}

pub struct RuleRow {
    pub text: String,
    pub remove_url: String,
}

const CHART_ROWS: usize = 12;

pub async fn registry(web: Web) -> PageResult {
    web.require_admin()?;
    let app = &web.app;
    let usage = app.gc.usage().await?;
    let mut ns = usage.namespaces.clone();
    ns.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.namespace.cmp(&b.namespace)));
    let max = ns.first().map(|n| n.bytes).unwrap_or(0).max(1);
    let rows: Vec<NamespaceRow> = ns
        .iter()
        .enumerate()
        .map(|(i, n)| NamespaceRow {
            name: n.namespace.clone(),
            bytes: bytes(n.bytes),
            repositories: n.repositories,
            quota: n
                .quota
                .map(|q| {
                    format!(
                        "{} ({}%)",
                        bytes(q),
                        (n.bytes as u128 * 100)
                            .checked_div(q as u128)
                            .unwrap_or(100)
                    )
                })
                .unwrap_or_default(),
            over: n.quota.is_some_and(|q| n.bytes > q),
            bar: (n.bytes * 100).div_ceil(max),
            y: i * 28,
        })
        .collect();
    let chart: Vec<NamespaceRow> = rows
        .iter()
        .take(CHART_ROWS)
        .map(|r| NamespaceRow {
            name: r.name.clone(),
            bytes: r.bytes.clone(),
            repositories: r.repositories,
            quota: r.quota.clone(),
            over: r.over,
            bar: r.bar,
            y: r.y,
        })
        .collect();
    let runs = app
        .gc
        .gc_runs(20)
        .await?
        .into_iter()
        .map(|r| RunRow {
            started: when(r.started_at),
            started_ago: ago(r.started_at),
            trigger: r.trigger,
            dry_run: r.dry_run,
            took: r
                .finished_at
                .map(|f| duration(f - r.started_at))
                .unwrap_or_default(),
            running: r.finished_at.is_none() && r.error.is_none(),
            manifests: r.report.manifests_deleted,
            blobs: r.report.blobs_deleted,
            freed: bytes(r.report.bytes_freed),
            uploads: r.report.uploads_expired,
            error: r.error.unwrap_or_default(),
        })
        .collect();
    let page = RegistryPage {
        chrome: web.chrome("admin", "Registry"),
        total: bytes(usage.total_bytes),
        blobs: usage.blobs,
        repositories: usage.namespaces.iter().map(|n| n.repositories).sum(),
        chart_height: chart.len() * 28,
        namespaces: rows,
        chart,
        runs,
        running: app.gc.gc_lease_held().await?,
        interval: String::from(app.config.gc.interval.clone()),
        grace: String::from(app.config.gc.grace_period.clone()),
        untagged: format!("{:?}", app.config.gc.untagged).to_lowercase(),
        rules: app
            .gc
            .retention_rules()
            .await?
            .iter()
            .map(|r| RuleRow {
                text: crate::cli::retention::describe(r),
                remove_url: format!("/admin/retention/{}/remove", r.id),
            })
            .collect(),
    };
    Ok(web.page(&page))
}

#[derive(Deserialize)]
pub struct GcForm {
    csrf: String,
    dry_run: Option<String>,
}

pub async fn gc(web: Web, State(app): State<AppState>, Form(f): Form<GcForm>) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    let dry_run = f.dry_run.is_some();
    let body = if dry_run {
        &br#"{"dry_run":true}"#[..]
    } else {
        b""
    };
    let r = gc::start(State(app), web.api(), axum::body::Bytes::from_static(body)).await;
    let msg = if dry_run {
        "A dry run of garbage collection started: it reports what it would delete and deletes nothing."
    } else {
        "Garbage collection started. It runs online; refresh to see its result."
    };
    web.outcome(r, "/admin", "/admin", msg)
}

#[derive(Deserialize)]
pub struct QuotaForm {
    csrf: String,
    namespace: String,
    /// Empty: remove the quota.
    #[serde(default)]
    size: String,
}

pub async fn quota(web: Web, State(app): State<AppState>, Form(f): Form<QuotaForm>) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    let ns = f.namespace.trim().to_string();
    if f.size.trim().is_empty() {
        let r = gc::remove_quota(State(app), web.api(), Path(ns.clone())).await;
        return web.outcome(r, "/admin", "/admin", format!("{ns} has no quota now."));
    }
    let size = match crate::config::parse_size(&f.size) {
        Ok(s) => s,
        Err(e) => return Ok(web.done("/admin", false, super::sentence(&e))),
    };
    let r = gc::set_quota(
        State(app),
        web.api(),
        Path(ns.clone()),
        Json(gc::QuotaRequest {
            bytes: i64::try_from(size).unwrap_or(i64::MAX),
        }),
    )
    .await;
    web.outcome(
        r,
        "/admin",
        "/admin",
        format!("The quota of {ns} is {} now.", bytes(size)),
    )
}

#[derive(Deserialize)]
pub struct RuleForm {
    csrf: String,
    repositories: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    keep_tags: String,
    #[serde(default)]
    untagged_days: String,
}

pub async fn retention_add(
    web: Web,
    State(app): State<AppState>,
    Form(f): Form<RuleForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    let number = |v: &str| -> Result<Option<i32>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| format!("{v:?} is not a number of at least 0."))
    };
    let (keep_tags, untagged_days) = match (number(&f.keep_tags), number(&f.untagged_days)) {
        (Ok(k), Ok(u)) => (k, u),
        (Err(e), _) | (_, Err(e)) => return Ok(web.done("/admin", false, e)),
    };
    if keep_tags.is_none() && untagged_days.is_none() {
        return Ok(web.done(
            "/admin",
            false,
            "A rule needs a number of tags to keep, an age for untagged images, or both.",
        ));
    }
    let tags = f.tags.trim();
    let rule = crate::meta::gc::RetentionRule {
        id: 0,
        repositories: f.repositories.trim().to_string(),
        tags: if tags.is_empty() {
            "*".into()
        } else {
            tags.to_string()
        },
        keep_tags,
        untagged_days,
    };
    let text = crate::cli::retention::describe(&rule);
    let r = gc::retention_add(State(app), web.api(), Json(rule)).await;
    web.outcome(
        r,
        "/admin",
        "/admin",
        format!("Added the rule {text}. The next collection applies it; a dry run previews it."),
    )
}

pub async fn retention_remove(
    web: Web,
    State(app): State<AppState>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    gc::retention_remove(State(app), web.api(), Path(id)).await?;
    Ok(web.done("/admin", true, "Removed the retention rule."))
}

pub struct UserRow {
    pub name: String,
    pub url: String,
    pub admin: bool,
    pub created: String,
    pub last_login: String,
}

fn user_row(u: &User) -> UserRow {
    UserRow {
        url: format!("/admin/users/{}", seg(&u.name)),
        name: u.name.clone(),
        admin: u.is_admin,
        created: when(u.created_at),
        last_login: u.last_login_at.map(ago).unwrap_or_else(|| "never".into()),
    }
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    /// A password generated for a new user, shown once.
    created: Option<(String, String)>,
}

async fn users_page(web: Web, created: Option<(String, String)>) -> PageResult {
    web.require_admin()?;
    let list = users::list(State(web.app.clone()), web.api()).await?.0;
    let page = UsersPage {
        chrome: web.chrome("users", "Users"),
        users: list.iter().map(user_row).collect(),
        created,
    };
    Ok(web.page(&page))
}

pub async fn users(web: Web) -> PageResult {
    users_page(web, None).await
}

#[derive(Deserialize)]
pub struct NewUserForm {
    csrf: String,
    name: String,
    #[serde(default)]
    password: String,
    admin: Option<String>,
}

pub async fn user_create(
    web: Web,
    State(app): State<AppState>,
    Form(f): Form<NewUserForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    let req = users::NewUser {
        name: f.name.trim().to_string(),
        password: Some(f.password.clone()).filter(|p| !p.is_empty()),
        admin: f.admin.is_some(),
    };
    match users::create(State(app), web.api(), Json(req)).await {
        Ok((_, Json(created))) => match created.password {
            Some(pw) => users_page(web, Some((created.user.name, pw))).await,
            None => Ok(web.done(
                "/admin/users",
                true,
                format!("Created the user {}.", created.user.name),
            )),
        },
        Err(e) => web.outcome(Err::<(), _>(e), "/admin/users", "/admin/users", ""),
    }
}

pub struct TokenRow {
    pub name: String,
    pub created: String,
    pub expires: String,
    pub last_used: String,
    pub revoke_url: String,
}

pub fn token_rows(list: &[AccessToken], revoke_base: &str) -> Vec<TokenRow> {
    list.iter()
        .map(|t| TokenRow {
            name: t.name.clone(),
            created: when(t.created_at),
            expires: t.expires_at.map(when).unwrap_or_else(|| "never".into()),
            last_used: t.last_used_at.map(ago).unwrap_or_else(|| "never".into()),
            revoke_url: format!("{revoke_base}/{}/revoke", seg(&t.name)),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "admin_user.html")]
struct UserPage {
    chrome: Chrome,
    user: UserRow,
    url: String,
    teams: Vec<String>,
    tokens: Vec<TokenRow>,
    is_me: bool,
    /// A password just generated, shown once.
    new_password: Option<String>,
}

async fn user_page(web: Web, name: String, new_password: Option<String>) -> PageResult {
    web.require_admin()?;
    let detail = users::get(State(web.app.clone()), web.api(), Path(name.clone()))
        .await?
        .0;
    let url = format!("/admin/users/{}", seg(&name));
    let list = web.app.accounts.tokens(Some(&name)).await?;
    let page = UserPage {
        chrome: web.chrome("users", name.clone()),
        user: user_row(&detail.user),
        tokens: token_rows(&list, &format!("{url}/tokens")),
        url,
        teams: detail.teams,
        is_me: web.caller.name() == Some(name.as_str()),
        new_password,
    };
    Ok(web.page(&page))
}

pub async fn user(web: Web, Path(name): Path<String>) -> PageResult {
    user_page(web, name, None).await
}

#[derive(Deserialize)]
pub struct AdminForm {
    csrf: String,
    /// "true" or "false".
    admin: String,
}

pub async fn user_admin(
    web: Web,
    State(app): State<AppState>,
    Path(name): Path<String>,
    Form(f): Form<AdminForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    let admin = f.admin == "true";
    let req = users::UserUpdate {
        password: None,
        admin: Some(admin),
    };
    let r = users::update(State(app), web.api(), Path(name.clone()), Json(req)).await;
    let url = format!("/admin/users/{}", seg(&name));
    let msg = if admin {
        format!("{name} is now an administrator.")
    } else {
        format!("{name} is no longer an administrator.")
    };
    web.outcome(r, &url, &url, msg)
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    #[serde(default)]
    password: String,
}

pub async fn user_password(
    web: Web,
    State(app): State<AppState>,
    Path(name): Path<String>,
    Form(f): Form<PasswordForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    let generated = f.password.is_empty();
    let pw = if generated {
        crate::auth::password::random_password()
    } else {
        f.password.clone()
    };
    let req = users::UserUpdate {
        password: Some(pw.clone()),
        admin: None,
    };
    let url = format!("/admin/users/{}", seg(&name));
    match users::update(State(app.clone()), web.api(), Path(name.clone()), Json(req)).await {
        Ok(_) => {
            if generated {
                user_page(web, name, Some(pw)).await
            } else {
                Ok(web.done(&url, true, format!("Set a new password for {name}.")))
            }
        }
        Err(e) => web.outcome(Err::<(), _>(e), &url, &url, ""),
    }
}

/// Repositories of a namespace, for the warning before an account goes.
async fn namespace_repos(web: &Web, name: &str) -> anyhow::Result<(Vec<RepoRow>, bool)> {
    let ns = [name.to_string()];
    let (list, more) = web.app.meta.repositories(Some(&ns), None, None, 20).await?;
    Ok((
        list.into_iter()
            .map(|r| RepoRow {
                url: repo_url(&r.name),
                tags: r.tags,
                manifests: r.manifests,
                updated: String::new(),
                updated_at: String::new(),
                name: r.name,
            })
            .collect(),
        more,
    ))
}

async fn account_delete_confirm(web: Web, kind: &str, name: String) -> PageResult {
    web.require_admin()?;
    let exists = match kind {
        "user" => web.app.accounts.user_by_name(&name).await?.is_some(),
        _ => web.app.accounts.team(&name).await?.is_some(),
    };
    if !exists {
        return Err(crate::api::v1::Error::NotFound(format!("no {kind} named {name:?}")).into());
    }
    let (repos, more) = namespace_repos(&web, &name).await?;
    let mut lines = vec![format!(
        "The namespace {name}/ goes with it: every repository in it, with its tags and images, for everyone."
    )];
    if repos.is_empty() {
        lines.push(format!("{name}/ holds no repositories now."));
    } else {
        let names: Vec<&str> = repos.iter().map(|r| r.name.as_str()).collect();
        lines.push(format!(
            "Repositories that will be deleted: {}{}.",
            names.join(", "),
            if more { ", and more" } else { "" }
        ));
        lines.push("Their storage is reclaimed by the next garbage collection.".into());
    }
    if kind == "user" {
        lines.push(format!("{name}'s access tokens stop working at once."));
    }
    let base = if kind == "user" { "users" } else { "teams" };
    let url = format!("/admin/{base}/{}", seg(&name));
    let page = ConfirmPage {
        chrome: web.chrome(
            if kind == "user" { "users" } else { "teams" },
            format!("Delete {name}"),
        ),
        heading: format!("Delete the {kind} {name}?"),
        lines,
        action: format!("{url}/delete"),
        button: format!("Delete {kind} and namespace"),
        cancel: url,
    };
    Ok(web.page(&page))
}

pub async fn user_delete_confirm(web: Web, Path(name): Path<String>) -> PageResult {
    account_delete_confirm(web, "user", name).await
}

pub async fn team_delete_confirm(web: Web, Path(name): Path<String>) -> PageResult {
    account_delete_confirm(web, "team", name).await
}

fn deleted(web: Web, to: &str, kind: &str, name: &str, repos: u64) -> Response {
    web.done(
        to,
        true,
        format!(
            "Deleted the {kind} {name} and {repos} repositor{} of its namespace.",
            if repos == 1 { "y" } else { "ies" }
        ),
    )
}

pub async fn user_delete(
    web: Web,
    State(app): State<AppState>,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    let d = users::remove(State(app), web.api(), Path(name.clone())).await?;
    Ok(deleted(
        web,
        "/admin/users",
        "user",
        &name,
        d.repositories_deleted,
    ))
}

pub async fn user_token_revoke(
    web: Web,
    State(app): State<AppState>,
    Path((name, token)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    tokens::revoke(State(app), web.api(), Path((name.clone(), token.clone()))).await?;
    let url = format!("/admin/users/{}", seg(&name));
    Ok(web.done(&url, true, format!("Revoked {name}'s token {token:?}.")))
}

pub struct TeamRow {
    pub name: String,
    pub url: String,
    pub members: usize,
    pub created: String,
}

#[derive(Template)]
#[template(path = "admin_teams.html")]
struct TeamsPage {
    chrome: Chrome,
    teams: Vec<TeamRow>,
}

pub async fn teams(web: Web) -> PageResult {
    web.require_admin()?;
    let list = teams::list(State(web.app.clone()), web.api()).await?.0;
    let page = TeamsPage {
        chrome: web.chrome("teams", "Teams"),
        teams: list
            .iter()
            .map(|t| TeamRow {
                url: format!("/admin/teams/{}", seg(&t.name)),
                name: t.name.clone(),
                members: t.members.len(),
                created: when(t.created_at),
            })
            .collect(),
    };
    Ok(web.page(&page))
}

#[derive(Deserialize)]
pub struct NameForm {
    csrf: String,
    name: String,
}

pub async fn team_create(
    web: Web,
    State(app): State<AppState>,
    Form(f): Form<NameForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    let name = f.name.trim().to_string();
    let r = teams::create(
        State(app),
        web.api(),
        Json(teams::NewTeam { name: name.clone() }),
    )
    .await;
    let url = format!("/admin/teams/{}", seg(&name));
    web.outcome(
        r,
        &url,
        "/admin/teams",
        format!("Created the team {name}. Add its members here."),
    )
}

pub struct MemberRow {
    pub name: String,
    pub user_url: String,
    pub remove_url: String,
}

#[derive(Template)]
#[template(path = "admin_team.html")]
struct TeamPage {
    chrome: Chrome,
    name: String,
    url: String,
    created: String,
    members: Vec<MemberRow>,
    /// Users who are not members, for the add form.
    others: Vec<String>,
    repos: Vec<RepoRow>,
    more_repos: bool,
}

pub async fn team(web: Web, Path(name): Path<String>) -> PageResult {
    web.require_admin()?;
    let t = teams::get(State(web.app.clone()), web.api(), Path(name.clone()))
        .await?
        .0;
    let url = format!("/admin/teams/{}", seg(&t.name));
    let all = web.app.accounts.users().await?;
    let others = all
        .into_iter()
        .filter(|u| !t.members.iter().any(|m| m.user == u.name))
        .map(|u| u.name)
        .collect();
    let (repos, more_repos) = namespace_repos(&web, &t.name).await?;
    let page = TeamPage {
        chrome: web.chrome("teams", t.name.clone()),
        members: t
            .members
            .iter()
            .map(|m| MemberRow {
                user_url: format!("/admin/users/{}", seg(&m.user)),
                remove_url: format!("{url}/members/{}/remove", seg(&m.user)),
                name: m.user.clone(),
            })
            .collect(),
        created: when(t.created_at),
        name: t.name,
        url,
        others,
        repos,
        more_repos,
    };
    Ok(web.page(&page))
}

pub async fn team_delete(
    web: Web,
    State(app): State<AppState>,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    let d = teams::remove(State(app), web.api(), Path(name.clone())).await?;
    Ok(deleted(
        web,
        "/admin/teams",
        "team",
        &name,
        d.repositories_deleted,
    ))
}

#[derive(Deserialize)]
pub struct MemberForm {
    csrf: String,
    user: String,
}

pub async fn member_add(
    web: Web,
    State(app): State<AppState>,
    Path(name): Path<String>,
    Form(f): Form<MemberForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    let user = f.user.trim().to_string();
    let url = format!("/admin/teams/{}", seg(&name));
    let r = teams::add_member(State(app), web.api(), Path((name.clone(), user.clone()))).await;
    match r {
        Err(crate::api::v1::Error::NotFound(m)) if m.starts_with("no user named") => {
            Ok(web.done(&url, false, format!("There is no user named {user:?}.")))
        }
        r => web.outcome(r, &url, &url, format!("{user} is now a member of {name}.")),
    }
}

pub async fn member_remove(
    web: Web,
    State(app): State<AppState>,
    Path((name, user)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    web.require_admin()?;
    teams::remove_member(State(app), web.api(), Path((name.clone(), user.clone()))).await?;
    let url = format!("/admin/teams/{}", seg(&name));
    Ok(web.done(
        &url,
        true,
        format!("{user} is no longer a member of {name}."),
    ))
}
