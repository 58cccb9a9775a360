//! `/api/v1/repositories`: what the caller may see, with tags; deleting repositories
//! and tags. A repository the caller may not pull answers 404, like a missing one.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use oci::{RepoName, Tag};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Auth, Error, ErrorBody, Result};
use crate::app::AppState;
use crate::auth::acl::Actions;
use crate::meta::{RepoSummary, TagDetail, TagFilter};

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only names containing this text.
    pub q: Option<String>,
    /// Names after this one (the `next` of the previous page).
    pub last: Option<String>,
    /// Page size (default 100; more than 1000 counts as 1000).
    #[param(minimum = 0)]
    pub n: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RepositoryPage {
    pub repositories: Vec<RepoSummary>,
    /// Pass as `last` to get the next page; absent on the last page.
    pub next: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/repositories", tag = "repositories", params(ListQuery), responses(
    (status = 200, body = RepositoryPage, description = "the repositories the caller may pull"), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<RepositoryPage>> {
    let n = super::page_size(q.n, 100, 1000)?;
    let namespaces = auth.0.readable_namespaces();
    let contains = q.q.as_deref().filter(|s| !s.is_empty());
    let (repositories, more) = app
        .meta
        .repositories(namespaces.as_deref(), contains, q.last.as_deref(), n)
        .await?;
    let next = more
        .then(|| repositories.last().map(|r| r.name.clone()))
        .flatten();
    Ok(Json(RepositoryPage { repositories, next }))
}

/// The repository, if the caller may do `action` there; 404 if they may not even
/// pull (indistinguishable from a missing repository), 403 otherwise.
pub(crate) fn repo_for(auth: &Auth, name: &str, action: Actions) -> Result<RepoName> {
    let not_found = || Error::NotFound(format!("no repository named {name:?}"));
    let repo: RepoName = name.parse().map_err(|_| not_found())?;
    let permitted = auth.0.permitted(&repo);
    if !permitted.contains(Actions::PULL) {
        return Err(not_found());
    }
    if !permitted.contains(action) {
        return Err(Error::Forbidden);
    }
    Ok(repo)
}

#[utoipa::path(get, path = "/api/v1/repositories/{name}/tags", tag = "repositories",
    params(("name" = String, Path, description = "repository name, percent-encoded (alice%2Fapp)")), responses(
    (status = 200, body = Vec<TagDetail>), (status = 404, body = ErrorBody)))]
pub async fn tags(
    State(app): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Vec<TagDetail>>> {
    let repo = repo_for(&auth, &name, Actions::PULL)?;
    let tags = app
        .meta
        .tag_details(&repo, TagFilter::ALL)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no repository named {name:?}")))?;
    Ok(Json(tags.tags))
}

#[utoipa::path(delete, path = "/api/v1/repositories/{name}", tag = "repositories",
    params(("name" = String, Path, description = "repository name, percent-encoded")), responses(
    (status = 204, description = "the repository, its tags and manifests are gone; storage is reclaimed by garbage collection"),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    let repo = repo_for(&auth, &name, Actions::DELETE)?;
    if !app.meta.delete_repository(&repo).await? {
        return Err(Error::NotFound(format!("no repository named {name:?}")));
    }
    auth.audit(&app, "delete", repo.as_str(), Some("repository".into()))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/repositories/{name}/tags/{tag}", tag = "repositories",
    params(("name" = String, Path, description = "repository name, percent-encoded"), ("tag" = String, Path)), responses(
    (status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_tag(
    State(app): State<AppState>,
    auth: Auth,
    Path((name, tag)): Path<(String, String)>,
) -> Result<StatusCode> {
    let repo = repo_for(&auth, &name, Actions::DELETE)?;
    let missing = || Error::NotFound(format!("{name} has no tag {tag:?}"));
    let t: Tag = tag.parse().map_err(|_| missing())?;
    if !app.meta.delete_tag(&repo, &t).await? {
        return Err(missing());
    }
    auth.audit(&app, "delete", &format!("{repo}:{t}"), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/repositories/{name}/manifests/{digest}", tag = "repositories",
    params(("name" = String, Path, description = "repository name, percent-encoded"), ("digest" = String, Path)), responses(
    (status = 204, description = "the manifest and every tag pointing at it are gone"),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_manifest(
    State(app): State<AppState>,
    auth: Auth,
    Path((name, digest)): Path<(String, String)>,
) -> Result<StatusCode> {
    let repo = repo_for(&auth, &name, Actions::DELETE)?;
    let missing = || Error::NotFound(format!("{name} has no manifest {digest}"));
    let d: oci::Digest = digest.parse().map_err(|_| missing())?;
    if !app.meta.delete_manifest(&repo, &d).await? {
        return Err(missing());
    }
    auth.audit(&app, "delete", &format!("{repo}@{d}"), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
