//! Images: the repositories a person may see, a repository's tags, a manifest with its
//! layers, platforms and referrers, and deleting tags, images and repositories.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::Form;
use futures_util::TryStreamExt;
use oci::{Digest, RepoName};
use serde::Deserialize;

use super::session::CsrfForm;
use super::{Chrome, PageError, PageResult, Web};
use crate::api::v1::repositories::{self, repo_for};
use crate::app::{App, AppState};
use crate::auth::acl::Actions;
use crate::human::{ago, bytes, seg, short_digest, when};
use crate::meta::TagFilter;

const PAGE: u32 = 50;
const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const TAGS_PAGE: u32 = 100;

/// `/repositories/alice/app` and what follows `/-/`.
pub fn repo_url(name: &str) -> String {
    let encoded: Vec<String> = name.split('/').map(seg).collect();
    format!("/repositories/{}", encoded.join("/"))
}

pub struct RepoRow {
    pub name: String,
    pub url: String,
    pub tags: u64,
    pub manifests: u64,
    pub updated: String,
    pub updated_at: String,
}

#[derive(Template)]
#[template(path = "repositories.html")]
struct IndexPage {
    chrome: Chrome,
    q: String,
    repos: Vec<RepoRow>,
    next: Option<String>,
    first: Option<String>,
    host: String,
    /// A namespace this person may push to (for the empty state's example).
    example_ns: String,
}

#[derive(Deserialize)]
pub struct IndexQuery {
    q: Option<String>,
    last: Option<String>,
}

pub async fn index(web: Web, Query(q): Query<IndexQuery>) -> PageResult {
    web.require_user()?;
    let contains = q.q.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let readable = web.caller.readable_namespaces();
    let (list, more) = web
        .app
        .meta
        .repositories(readable.as_deref(), contains, q.last.as_deref(), PAGE)
        .await?;
    let query = |last: Option<&str>| {
        let mut pairs = Vec::new();
        if let Some(c) = contains {
            pairs.push(("q", c));
        }
        if let Some(l) = last {
            pairs.push(("last", l));
        }
        let s = serde_urlencoded::to_string(pairs).unwrap_or_default();
        if s.is_empty() {
            "/".to_string()
        } else {
            format!("/?{s}")
        }
    };
    let next = more
        .then(|| list.last().map(|r| query(Some(&r.name))))
        .flatten();
    let first = q.last.is_some().then(|| query(None));
    let repos = list
        .into_iter()
        .map(|r| {
            let t = r.updated_at.unwrap_or(r.created_at);
            RepoRow {
                url: repo_url(&r.name),
                tags: r.tags,
                manifests: r.manifests,
                updated: ago(t),
                updated_at: when(t),
                name: r.name,
            }
        })
        .collect();
    let example_ns = readable
        .and_then(|n| n.into_iter().next())
        .unwrap_or_else(|| "team".into());
    let page = IndexPage {
        chrome: web.chrome("images", "Images"),
        q: contains.unwrap_or_default().to_string(),
        repos,
        next,
        first,
        host: web.registry_host().to_string(),
        example_ns,
    };
    Ok(web.page(&page))
}

/// What `/repositories/{*path}` addresses.
enum Target {
    Repository,
    DeleteRepository,
    Manifest(String),
    DeleteManifest(String),
    DeleteTag(String),
}

fn parse_path(path: &str) -> Result<(String, Target), PageError> {
    let not_found = || PageError::Status(axum::http::StatusCode::NOT_FOUND, "No such page.".into());
    let (name, rest) = match path.split_once("/-/") {
        Some((n, r)) => (n, Some(r)),
        None => (path.trim_end_matches('/'), None),
    };
    let parts: Vec<&str> = rest.map(|r| r.split('/').collect()).unwrap_or_default();
    let target = match parts.as_slice() {
        [] => Target::Repository,
        ["delete"] => Target::DeleteRepository,
        ["manifests", d] => Target::Manifest(d.to_string()),
        ["manifests", d, "delete"] => Target::DeleteManifest(d.to_string()),
        ["tags", t, "delete"] => Target::DeleteTag(t.to_string()),
        _ => return Err(not_found()),
    };
    Ok((name.to_string(), target))
}

pub struct TagRow {
    pub name: String,
    pub digest: String,
    pub short: String,
    pub size: String,
    pub platforms: Vec<String>,
    pub pushed: String,
    pub pushed_at: String,
    pub pushed_by: String,
    pub pull: String,
    pub manifest_url: String,
    pub delete_url: String,
}

#[derive(Template)]
#[template(path = "repository.html")]
struct RepositoryPage {
    chrome: Chrome,
    name: String,
    url: String,
    tags: Vec<TagRow>,
    total: u64,
    can_delete: bool,
    pull_cmd: String,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct RepoQuery {
    /// Tags after this one (keyset pagination).
    last: Option<String>,
}

fn no_repository(name: &str) -> crate::api::v1::Error {
    crate::api::v1::Error::NotFound(format!("no repository named {name:?}"))
}

pub async fn repository_get(
    web: Web,
    Path(path): Path<String>,
    Query(q): Query<RepoQuery>,
) -> PageResult {
    web.require_user()?;
    let (name, target) = parse_path(&path)?;
    let auth = web.api();
    let repo = repo_for(&auth, &name, Actions::PULL)?;
    let can_delete = web.caller.permitted(&repo).contains(Actions::DELETE);
    match target {
        Target::Repository => {}
        Target::Manifest(d) => return manifest_page(web, repo, &d, can_delete).await,
        Target::DeleteRepository | Target::DeleteManifest(_) | Target::DeleteTag(_) => {
            repo_for(&auth, &name, Actions::DELETE)?;
            return confirm_page(web, repo, target).await;
        }
    }
    let filter = TagFilter {
        last: q.last.as_deref(),
        n: TAGS_PAGE + 1,
        digest: None,
    };
    let page = web
        .app
        .meta
        .tag_details(&repo, filter)
        .await?
        .ok_or_else(|| no_repository(&name))?;
    let more = page.tags.len() > TAGS_PAGE as usize;
    let url = repo_url(repo.as_str());
    let host = web.registry_host().to_string();
    let mut rows = Vec::new();
    for t in page.tags.into_iter().take(TAGS_PAGE as usize) {
        let platforms = if is_index(&t.media_type) {
            index_platforms(&web.app, &t.digest)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        rows.push(TagRow {
            pull: format!("{host}/{repo}:{}", t.name),
            manifest_url: format!("{url}/-/manifests/{}", seg(&t.digest)),
            delete_url: format!("{url}/-/tags/{}/delete", seg(&t.name)),
            short: short_digest(&t.digest),
            size: bytes(t.size),
            platforms,
            pushed: ago(t.updated_at),
            pushed_at: when(t.updated_at),
            pushed_by: t.pushed_by.unwrap_or_default(),
            digest: t.digest,
            name: t.name,
        });
    }
    let page_url = |last: &str| {
        format!(
            "{url}?{}",
            serde_urlencoded::to_string([("last", last)]).unwrap_or_default()
        )
    };
    let view = RepositoryPage {
        chrome: web.chrome("images", repo.as_str()),
        pull_cmd: format!(
            "{host}/{repo}:{}",
            rows.first().map(|r| r.name.as_str()).unwrap_or("latest")
        ),
        name: repo.to_string(),
        prev: q.last.is_some().then(|| url.clone()),
        next: more
            .then(|| rows.last().map(|r| page_url(&r.name)))
            .flatten(),
        url,
        tags: rows,
        total: page.total,
        can_delete,
    };
    Ok(web.page(&view))
}

fn is_index(media_type: &str) -> bool {
    media_type == oci::media::OCI_INDEX || media_type == oci::media::DOCKER_MANIFEST_LIST
}

/// A manifest's bytes (at most the configured manifest size limit).
async fn manifest_bytes(app: &App, digest: &Digest) -> anyhow::Result<Vec<u8>> {
    let limit = app.config.limits.manifest_max_bytes as usize;
    let mut stream = app.blobs.read(digest, None).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            anyhow::bail!("manifest {digest} is larger than limits.manifest_max_bytes");
        }
    }
    Ok(out)
}

/// "linux/arm64/v8" from a descriptor's `platform`.
fn platform_label(p: &serde_json::Value) -> String {
    let get = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let mut s = format!("{}/{}", get("os"), get("architecture"));
    if !get("variant").is_empty() {
        s.push('/');
        s.push_str(get("variant"));
    }
    s
}

async fn index_platforms(app: &App, digest: &str) -> anyhow::Result<Vec<String>> {
    let d: Digest = digest.parse()?;
    let body = manifest_bytes(app, &d).await?;
    let parsed = oci::manifest::parse(&body, None).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(parsed
        .manifests
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .map(platform_label)
        .filter(|p| p != "unknown/unknown")
        .collect())
}

pub struct DescRow {
    pub label: String,
    pub digest: String,
    pub short: String,
    pub media_type: String,
    pub size: String,
    /// A link to the manifest page, for child manifests and referrers.
    pub url: Option<String>,
}

#[derive(Template)]
#[template(path = "manifest.html")]
struct ManifestPage {
    chrome: Chrome,
    repo: String,
    repo_url: String,
    digest: String,
    media_type: String,
    artifact_type: String,
    size: String,
    total: String,
    pushed: String,
    tags: Vec<String>,
    config: Option<DescRow>,
    layers: Vec<DescRow>,
    children: Vec<DescRow>,
    referrers: Vec<DescRow>,
    subject: Option<DescRow>,
    annotations: Vec<(String, String)>,
    pull_cmd: String,
    can_delete: bool,
    delete_url: String,
}

/// The tags pointing at `digest` (at most 1000 shown); 404 if the repository is gone.
async fn tags_of(
    web: &Web,
    repo: &RepoName,
    digest: &str,
) -> Result<Vec<crate::meta::TagDetail>, PageError> {
    let filter = TagFilter {
        last: None,
        n: 1000,
        digest: Some(digest),
    };
    Ok(web
        .app
        .meta
        .tag_details(repo, filter)
        .await?
        .ok_or_else(|| no_repository(repo.as_str()))?
        .tags)
}

async fn manifest_page(web: Web, repo: RepoName, digest: &str, can_delete: bool) -> PageResult {
    let missing = || crate::api::v1::Error::NotFound(format!("{repo} has no manifest {digest}"));
    let d: Digest = digest.parse().map_err(|_| missing())?;
    let row = web
        .app
        .meta
        .manifest_by_digest(&repo, &d)
        .await?
        .ok_or_else(missing)?;
    let body = manifest_bytes(&web.app, &d).await?;
    let parsed = oci::manifest::parse(&body, Some(&row.media_type))
        .map_err(|e| anyhow::anyhow!("stored manifest {d} does not parse: {e:?}"))?;
    let url = repo_url(repo.as_str());
    let link = |digest: &Digest| Some(format!("{url}/-/manifests/{}", seg(&digest.to_string())));
    let desc = |label: String, x: &oci::manifest::Descriptor, url: Option<String>| DescRow {
        label,
        digest: x.digest.to_string(),
        short: short_digest(&x.digest.to_string()),
        media_type: x.media_type.clone(),
        size: bytes(x.size),
        url,
    };
    let layers: Vec<DescRow> = parsed
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| desc(format!("{}", i + 1), l, None))
        .collect();
    let children = parsed
        .manifests
        .iter()
        .map(|m| {
            let label = m.platform.as_ref().map(platform_label).unwrap_or_default();
            desc(label, m, link(&m.digest))
        })
        .collect();
    let total = row.size
        + parsed.config.as_ref().map(|c| c.size).unwrap_or(0)
        + parsed.layers.iter().map(|l| l.size).sum::<u64>();
    let referrers = web
        .app
        .meta
        .referrers(&repo, &d, None)
        .await?
        .into_iter()
        .map(|r| DescRow {
            label: r.artifact_type.clone().unwrap_or_default(),
            short: short_digest(&r.digest.to_string()),
            url: link(&r.digest),
            digest: r.digest.to_string(),
            media_type: r.media_type,
            size: bytes(r.size),
        })
        .collect();
    let digest_s = d.to_string();
    let tags = tags_of(&web, &repo, &digest_s).await?;
    let tag_names: Vec<String> = tags.iter().map(|t| t.name.clone()).collect();
    let pushed = tags
        .iter()
        .map(|t| t.updated_at)
        .max()
        .map(|t| format!("{} ({})", ago(t), when(t)))
        .unwrap_or_default();
    let page = ManifestPage {
        chrome: web.chrome("images", format!("{repo}@{}", short_digest(&digest_s))),
        pull_cmd: format!("{}/{repo}@{digest_s}", web.registry_host()),
        repo: repo.to_string(),
        repo_url: url.clone(),
        media_type: row.media_type.clone(),
        // An image's config type is not an artifact type worth a line.
        artifact_type: parsed
            .artifact_type
            .clone()
            .filter(|t| t != OCI_IMAGE_CONFIG && t != DOCKER_IMAGE_CONFIG)
            .unwrap_or_default(),
        size: bytes(row.size),
        total: bytes(total),
        pushed,
        tags: tag_names,
        config: parsed
            .config
            .as_ref()
            .map(|c| desc("config".into(), c, None)),
        layers,
        children,
        referrers,
        subject: parsed
            .subject
            .as_ref()
            .map(|s| desc("subject".into(), s, link(&s.digest))),
        annotations: parsed
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        can_delete,
        delete_url: format!("{url}/-/manifests/{}/delete", seg(&digest_s)),
        digest: digest_s,
    };
    Ok(web.page(&page))
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub heading: String,
    /// What goes, and what stays, one sentence a line.
    pub lines: Vec<String>,
    pub action: String,
    pub button: String,
    pub cancel: String,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

async fn confirm_page(web: Web, repo: RepoName, target: Target) -> PageResult {
    let url = repo_url(repo.as_str());
    let (heading, lines, action, button) = match target {
        Target::DeleteRepository => {
            let count = TagFilter {
                last: None,
                n: 0,
                digest: None,
            };
            let tags = web
                .app
                .meta
                .tag_details(&repo, count)
                .await?
                .ok_or_else(|| no_repository(repo.as_str()))?
                .total as usize;
            let namespace = [repo.namespace().to_string()];
            let (list, _) = web
                .app
                .meta
                .repositories(Some(&namespace), Some(repo.as_str()), None, 1000)
                .await?;
            let manifests = list
                .iter()
                .find(|r| r.name == repo.as_str())
                .map(|r| r.manifests)
                .unwrap_or(0) as usize;
            (
                format!("Delete the repository {repo}?"),
                vec![
                    format!(
                        "{} and {} go with it; pulls of {repo} will fail.",
                        plural(tags, "tag", "tags"),
                        plural(manifests, "image (manifest)", "images (manifests)")
                    ),
                    "Layers no other repository uses are freed by the next garbage collection."
                        .into(),
                ],
                format!("{url}/-/delete"),
                "Delete repository".to_string(),
            )
        }
        Target::DeleteTag(tag) => {
            let missing = || crate::api::v1::Error::NotFound(format!("{repo} has no tag {tag:?}"));
            let t: oci::Tag = tag.parse().map_err(|_| missing())?;
            let m = web
                .app
                .meta
                .manifest_by_tag(&repo, &t)
                .await?
                .ok_or_else(missing)?;
            let digest = m.digest.to_string();
            let same = tags_of(&web, &repo, &digest).await?;
            let others: Vec<&str> = same
                .iter()
                .filter(|o| o.name != tag)
                .map(|o| o.name.as_str())
                .collect();
            let stays = if others.is_empty() {
                format!(
                    "The image {} stays, untagged: it can still be pulled by digest until garbage collection removes untagged images.",
                    short_digest(&digest)
                )
            } else {
                format!(
                    "The image {} stays, with its other tags: {}.",
                    short_digest(&digest),
                    others.join(", ")
                )
            };
            (
                format!("Delete the tag {repo}:{tag}?"),
                vec![format!("Pulls of {repo}:{tag} will fail."), stays],
                format!("{url}/-/tags/{}/delete", seg(&tag)),
                "Delete tag".to_string(),
            )
        }
        Target::DeleteManifest(digest) => {
            let d: Digest = digest.parse().map_err(|_| {
                crate::api::v1::Error::NotFound(format!("{repo} has no manifest {digest}"))
            })?;
            web.app
                .meta
                .manifest_by_digest(&repo, &d)
                .await?
                .ok_or_else(|| {
                    crate::api::v1::Error::NotFound(format!("{repo} has no manifest {digest}"))
                })?;
            let digest_s = d.to_string();
            let same = tags_of(&web, &repo, &digest_s).await?;
            let names: Vec<&str> = same.iter().map(|t| t.name.as_str()).collect();
            let referrers = web.app.meta.referrers(&repo, &d, None).await?.len();
            let mut lines = vec![if names.is_empty() {
                "No tag points at it.".to_string()
            } else {
                format!("Its tags go with it: {}.", names.join(", "))
            }];
            if referrers > 0 {
                lines.push(format!(
                    "{} attached to it (signatures, SBOMs) will be removed by the next garbage collection.",
                    plural(referrers, "artifact", "artifacts")
                ));
            }
            lines.push(
                "Layers no other image uses are freed by the next garbage collection.".into(),
            );
            (
                format!("Delete the image {repo}@{}?", short_digest(&digest_s)),
                lines,
                format!("{url}/-/manifests/{}/delete", seg(&digest_s)),
                "Delete image".to_string(),
            )
        }
        Target::Repository | Target::Manifest(_) => unreachable!("not a deletion"),
    };
    let page = ConfirmPage {
        chrome: web.chrome("images", heading.clone()),
        heading,
        lines,
        action,
        button,
        cancel: url,
    };
    Ok(web.page(&page))
}

pub async fn repository_post(
    web: Web,
    State(app): State<AppState>,
    Path(path): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    let (name, target) = parse_path(&path)?;
    let auth = web.api();
    let url = repo_url(&name);
    match target {
        Target::DeleteRepository => {
            repositories::remove(State(app), auth, Path(name.clone())).await?;
            Ok(web.done("/", true, format!("Deleted the repository {name}.")))
        }
        Target::DeleteTag(tag) => {
            repositories::remove_tag(State(app), auth, Path((name.clone(), tag.clone()))).await?;
            Ok(web.done(&url, true, format!("Deleted the tag {name}:{tag}.")))
        }
        Target::DeleteManifest(digest) => {
            repositories::remove_manifest(State(app), auth, Path((name.clone(), digest.clone())))
                .await?;
            Ok(web.done(
                &url,
                true,
                format!("Deleted the image {name}@{}.", short_digest(&digest)),
            ))
        }
        Target::Repository | Target::Manifest(_) => Err(PageError::Status(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "Nothing to post here.".into(),
        )),
    }
}
