//! Blob pushes: monolithic (`POST ?digest=`), POST-then-PUT, streamed and chunked
//! `PATCH`, upload status, cancel, and cross-repository mount.
//!
//! The upload session's bytes live in the blob store; which repository a session
//! belongs to lives in the metadata, so a session opened in one repository cannot be
//! continued or committed in another.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use oci::range::parse_upload_content_range;
use oci::{Digest, ErrorCode, OciError, RepoName};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::{upload_range, Ctx};
use crate::auth::acl::Actions;

fn query_digest(ctx: &Ctx, key: &str) -> Result<Option<Digest>, OciError> {
    ctx.query(key)
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| ErrorCode::DigestInvalid.msg(format!("{key}={d:?}: {e}")))
        })
        .transpose()
}

fn created(ctx: &Ctx, repo: &RepoName, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                ctx.url(&format!("/v2/{repo}/blobs/{digest}")),
            ),
            (header::CONTENT_LENGTH, "0".to_string()),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest.to_string(),
            ),
        ],
    )
        .into_response()
}

fn session_response(
    ctx: &Ctx,
    status: StatusCode,
    repo: &RepoName,
    id: Uuid,
    size: u64,
) -> Response {
    (
        status,
        [
            (
                header::LOCATION,
                ctx.url(&format!("/v2/{repo}/blobs/uploads/{id}")),
            ),
            (header::RANGE, upload_range(size)),
            (header::CONTENT_LENGTH, "0".to_string()),
            (
                header::HeaderName::from_static("docker-upload-uuid"),
                id.to_string(),
            ),
        ],
    )
        .into_response()
}

/// `POST /v2/<name>/blobs/uploads/`
pub async fn start(ctx: Ctx, repo: RepoName) -> ApiResult {
    if let Some(mount) = query_digest(&ctx, "mount")? {
        if let Some(resp) = try_mount(&ctx, &repo, &mount).await? {
            return Ok(resp);
        }
        // Not mountable: the spec asks for an ordinary upload session instead.
    } else if let Some(digest) = query_digest(&ctx, "digest")? {
        // Monolithic upload: the whole blob in this request.
        ctx.check_quota(&repo, ctx.content_length().unwrap_or(0), Some(&digest))
            .await?;
        let size = ctx.app.blobs.put(&digest, ctx.take_body()).await?;
        if ctx.content_length().is_none() {
            // Streamed without a length: checked now that it is known, before linking
            // (an unlinked file is garbage collection's to remove).
            ctx.check_quota(&repo, size, Some(&digest)).await?;
        }
        ctx.link_blob(&repo, &digest, size, None).await?;
        return Ok(created(&ctx, &repo, &digest));
    }
    // A namespace already at its quota gets no new session.
    ctx.check_quota(&repo, 1, None).await?;
    let owner = ctx.upload_owner();
    let limit = ctx.app.config.limits.uploads_per_user;
    if ctx.app.meta.uploads_open(&owner).await? >= u64::from(limit) {
        return Err(ErrorCode::TooManyRequests
            .msg(format!(
                "too many open upload sessions ({limit}): finish or cancel some, or wait for \
                 abandoned ones to expire"
            ))
            .into());
    }
    let id = Uuid::new_v4();
    ctx.app.blobs.upload_start(id).await?;
    ctx.app.meta.upload_create(id, &repo, &owner).await?;
    Ok(session_response(&ctx, StatusCode::ACCEPTED, &repo, id, 0))
}

/// Links `digest` into `repo` if a repository the caller may pull from already has it
/// (a blob is never mounted from a repository the caller could not read).
async fn try_mount(
    ctx: &Ctx,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<Response>, ApiError> {
    let readable = |r: &RepoName| ctx.caller.permitted(r).contains(Actions::PULL);
    let from = ctx.query("from").and_then(|f| f.parse::<RepoName>().ok());
    let source = match from {
        Some(from) => Some(from).filter(readable),
        // Without `from`, the spec lets the registry pick any source it knows.
        None => ctx
            .app
            .meta
            .repos_with_blob(digest)
            .await?
            .into_iter()
            .find(readable),
    };
    let Some(source) = source else {
        return Ok(None);
    };
    let Some(size) = ctx.app.meta.repo_blob(&source, digest).await? else {
        return Ok(None);
    };
    if ctx.app.blobs.stat(digest).await?.is_none() {
        return Ok(None);
    }
    ctx.check_quota(repo, size, Some(digest)).await?;
    ctx.link_blob(repo, digest, size, None).await?;
    Ok(Some(created(ctx, repo, digest)))
}

async fn check_session(ctx: &Ctx, repo: &RepoName, id: Uuid) -> Result<(), ApiError> {
    match ctx.app.meta.upload_repo(id).await? {
        Some(r) if &r == repo => Ok(()),
        _ => Err(ErrorCode::BlobUploadUnknown.into()),
    }
}

/// The chunk's start offset from `Content-Range`, checked against `Content-Length`.
fn chunk_start(ctx: &Ctx) -> Result<Option<u64>, ApiError> {
    let Some(cr) = ctx.header("content-range") else {
        return Ok(None);
    };
    let (start, end) = parse_upload_content_range(cr).ok_or_else(|| {
        ErrorCode::RangeInvalid.msg(format!(
            "Content-Range {cr:?} is not of the form <start>-<end>"
        ))
    })?;
    if let Some(len) = ctx
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        if len != end - start + 1 {
            return Err(ErrorCode::RangeInvalid
                .msg(format!(
                    "Content-Range {cr} announces {} bytes but Content-Length is {len}",
                    end - start + 1
                ))
                .into());
        }
    }
    Ok(Some(start))
}

/// `GET /v2/<name>/blobs/uploads/<id>`
pub async fn status(ctx: Ctx, repo: RepoName, id: Uuid) -> ApiResult {
    check_session(&ctx, &repo, id).await?;
    let info = ctx.app.blobs.upload_info(id).await?;
    Ok(session_response(
        &ctx,
        StatusCode::NO_CONTENT,
        &repo,
        id,
        info.size,
    ))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: a chunk (with `Content-Range`) or a stream.
pub async fn patch(ctx: Ctx, repo: RepoName, id: Uuid) -> ApiResult {
    check_session(&ctx, &repo, id).await?;
    let start = chunk_start(&ctx)?;
    quota_before_chunk(&ctx, &repo, id).await?;
    let size = ctx
        .app
        .blobs
        .upload_append(id, start, ctx.take_body())
        .await?;
    quota_after_chunk(&ctx, &repo, id, size).await?;
    Ok(session_response(
        &ctx,
        StatusCode::ACCEPTED,
        &repo,
        id,
        size,
    ))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: an optional last chunk, then commit.
pub async fn finish(ctx: Ctx, repo: RepoName, id: Uuid) -> ApiResult {
    check_session(&ctx, &repo, id).await?;
    let digest = query_digest(&ctx, "digest")?.ok_or_else(|| {
        ErrorCode::DigestInvalid.msg("the digest query parameter is required to complete an upload")
    })?;
    let start = chunk_start(&ctx)?;
    let has_body = ctx.header("content-length").is_none_or(|l| l.trim() != "0");
    if has_body {
        quota_before_chunk(&ctx, &repo, id).await?;
        ctx.app
            .blobs
            .upload_append(id, start, ctx.take_body())
            .await?;
    }
    let so_far = ctx.app.blobs.upload_info(id).await?.size;
    if let Err(e) = ctx.check_quota(&repo, so_far, Some(&digest)).await {
        cancel_session(&ctx, id).await;
        return Err(e);
    }
    let size = ctx.app.blobs.upload_finish(id, &digest).await?;
    ctx.link_blob(&repo, &digest, size, Some(id)).await?;
    Ok(created(&ctx, &repo, &digest))
}

/// Before a chunk with a `Content-Length`: refused if the session's bytes plus the
/// chunk would not fit the namespace's quota (nothing of the chunk is read).
async fn quota_before_chunk(ctx: &Ctx, repo: &RepoName, id: Uuid) -> Result<(), ApiError> {
    let Some(len) = ctx.content_length() else {
        return Ok(());
    };
    let so_far = ctx.app.blobs.upload_info(id).await?.size;
    ctx.check_quota(repo, so_far.saturating_add(len), None)
        .await
}

/// After a chunk streamed without a length: a session grown past the quota is
/// cancelled (its bytes were never a blob), so the overshoot is one chunk at most.
async fn quota_after_chunk(
    ctx: &Ctx,
    repo: &RepoName,
    id: Uuid,
    size: u64,
) -> Result<(), ApiError> {
    if ctx.content_length().is_some() {
        return Ok(());
    }
    if let Err(e) = ctx.check_quota(repo, size, None).await {
        cancel_session(ctx, id).await;
        return Err(e);
    }
    Ok(())
}

async fn cancel_session(ctx: &Ctx, id: Uuid) {
    let _ = ctx.app.blobs.upload_cancel(id).await;
    let _ = ctx.app.meta.upload_delete(id).await;
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`
pub async fn cancel(ctx: Ctx, repo: RepoName, id: Uuid) -> ApiResult {
    check_session(&ctx, &repo, id).await?;
    ctx.app.blobs.upload_cancel(id).await?;
    ctx.app.meta.upload_delete(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
