//! Blob reads (with `Range`) and deletes. With `storage.s3.redirect`, a GET the caller
//! may make answers 307 to a presigned URL, so layers flow from S3 to the client
//! without passing through the registry; HEAD is always answered here.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use oci::range::{resolve_range, ByteRange};
use oci::{Digest, ErrorCode, RepoName};

use super::error::{ApiError, ApiResult};
use super::Ctx;

pub async fn get(ctx: Ctx, repo: RepoName, digest: Digest) -> ApiResult {
    let Some(size) = ctx.app.meta.repo_blob(&repo, &digest).await? else {
        return Err(ErrorCode::BlobUnknown.into());
    };
    let range = match ctx.header("range").map(|r| resolve_range(r, size)) {
        None | Some(ByteRange::Ignore) => None,
        Some(ByteRange::Satisfiable(a, b)) => Some((a, b)),
        Some(ByteRange::Unsatisfiable) => {
            return Err(ApiError::from(ErrorCode::RangeInvalid.msg(format!(
                "range {} is outside the blob's {size} bytes",
                ctx.header("range").unwrap_or_default()
            )))
            .header("content-range", format!("bytes */{size}")));
        }
    };
    if ctx.method == axum::http::Method::GET {
        if let Some(ttl) = ctx.app.config.storage.redirect_ttl() {
            // The store serves the bytes itself (S3 honours the client's Range too);
            // access was decided above, and the URL expires.
            if let Some(url) = ctx.app.blobs.redirect(&digest, ttl).await? {
                return Ok(Response::builder()
                    .status(StatusCode::TEMPORARY_REDIRECT)
                    .header(header::LOCATION, url)
                    .header(header::CONTENT_LENGTH, 0)
                    .header(header::CACHE_CONTROL, "no-store")
                    .header("docker-content-digest", digest.to_string())
                    .body(Body::empty())
                    .map_err(anyhow::Error::from)?);
            }
        }
    }
    let (status, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, b - a + 1),
        None => (StatusCode::OK, size),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::CACHE_CONTROL, "max-age=31536000")
        .header("docker-content-digest", digest.to_string());
    if let Some((a, b)) = range {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}"));
    }
    let body = if ctx.method == axum::http::Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(ctx.app.blobs.read(&digest, range).await?)
    };
    Ok(resp.body(body).map_err(anyhow::Error::from)?)
}

pub async fn delete(ctx: Ctx, repo: RepoName, digest: Digest) -> ApiResult {
    if ctx.app.meta.unlink_blob(&repo, &digest).await? {
        ctx.audit("delete", format!("{repo}@{digest}")).await;
        // The bytes stay until garbage collection finds no repository linking them.
        Ok(StatusCode::ACCEPTED.into_response())
    } else {
        Err(ErrorCode::BlobUnknown.into())
    }
}
