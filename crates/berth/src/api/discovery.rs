//! Content discovery: tags list, catalog (both sorted and paginated with `n`, `last`
//! and `Link`), and the referrers API.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use oci::{media, Digest, ErrorCode, RepoName};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::Ctx;
use crate::meta::Page;

/// `n` as asked, capped by `limits.page_max`; absent: the cap.
fn page_size(ctx: &Ctx) -> Result<u32, ApiError> {
    let max = ctx.app.config.limits.page_max;
    match ctx.query("n") {
        None | Some("") => Ok(max),
        Some(n) => n
            .parse::<u64>()
            .map(|n| n.min(max as u64) as u32)
            .map_err(|_| {
                ErrorCode::Unsupported
                    .msg(format!("n={n:?} is not a non-negative integer"))
                    .into()
            }),
    }
}

/// Adds `Link: <path?n=N&last=LAST>; rel="next"` when there is a next page.
fn with_link(ctx: &Ctx, path: &str, n: u32, page: &Page, mut resp: Response) -> Response {
    if let (true, Some(last)) = (page.more, page.items.last()) {
        let query = serde_urlencoded::to_string([("n", n.to_string()), ("last", last.clone())])
            .unwrap_or_default();
        let link = format!("<{}?{}>; rel=\"next\"", ctx.url(path), query);
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

pub async fn tags(ctx: Ctx, repo: RepoName) -> ApiResult {
    let n = page_size(&ctx)?;
    let page = ctx
        .app
        .meta
        .tags(&repo, ctx.query("last"), n)
        .await?
        .ok_or_else(|| {
            ErrorCode::NameUnknown.msg(format!("repository {repo} is not known to this registry"))
        })?;
    let resp = Json(json!({ "name": repo.as_str(), "tags": page.items })).into_response();
    Ok(with_link(
        &ctx,
        &format!("/v2/{repo}/tags/list"),
        n,
        &page,
        resp,
    ))
}

pub async fn catalog(ctx: Ctx) -> ApiResult {
    let n = page_size(&ctx)?;
    let namespaces = ctx.caller.readable_namespaces();
    let page = ctx
        .app
        .meta
        .catalog(namespaces.as_deref(), ctx.query("last"), n)
        .await?;
    let resp = Json(json!({ "repositories": page.items })).into_response();
    Ok(with_link(&ctx, "/v2/_catalog", n, &page, resp))
}

pub async fn referrers(ctx: Ctx, repo: RepoName, subject: Digest) -> ApiResult {
    let filter = ctx.query("artifactType").filter(|t| !t.is_empty());
    let found = ctx.app.meta.referrers(&repo, &subject, filter).await?;
    let manifests: Vec<serde_json::Value> = found
        .into_iter()
        .map(|r| {
            let mut d = json!({
                "mediaType": r.media_type,
                "digest": r.digest.to_string(),
                "size": r.size,
            });
            if let Some(t) = r.artifact_type {
                d["artifactType"] = t.into();
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media::OCI_INDEX),
    );
    if filter.is_some() {
        headers.insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok((headers, body.to_string()).into_response())
}
