//! Manifest GET/HEAD (with content negotiation), PUT (validated, references checked,
//! recorded in one transaction), DELETE by digest or tag.

use axum::body::Body;
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use oci::{Digest, ErrorCode, OciError, Reference, RepoName};

use super::error::{ApiError, ApiResult};
use super::Ctx;
use crate::meta::{NewManifest, PutManifest};

/// Whether the client's `Accept` list admits `media_type`. No `Accept` (or a wildcard)
/// admits anything. Only pulls by tag are negotiated: a pull by digest asks for exact
/// bytes and always gets them.
fn accepts(ctx: &Ctx, media_type: &str) -> bool {
    let mut any = false;
    for v in ctx.headers.get_all(header::ACCEPT) {
        for item in v.to_str().unwrap_or("").split(',') {
            let item = oci::manifest::essence(item);
            if item.is_empty() {
                continue;
            }
            any = true;
            if item == media_type || item == "*/*" || item == "application/*" {
                return true;
            }
        }
    }
    !any
}

pub async fn get(ctx: Ctx, repo: RepoName, reference: Reference) -> ApiResult {
    let meta = &ctx.app.meta;
    let row = match &reference {
        Reference::Tag(t) => meta.manifest_by_tag(&repo, t).await?,
        Reference::Digest(d) => meta.manifest_by_digest(&repo, d).await?,
    };
    let Some(row) = row else {
        return Err(ErrorCode::ManifestUnknown
            .msg(format!(
                "manifest {reference} is unknown to repository {repo}"
            ))
            .into());
    };
    if matches!(reference, Reference::Tag(_)) && !accepts(&ctx, &row.media_type) {
        return Err(ErrorCode::ManifestUnknown
            .msg(format!(
                "{repo}:{reference} is a {}, which the request's Accept header does not list",
                row.media_type
            ))
            .into());
    }
    let body = if ctx.method == Method::HEAD {
        Body::empty()
    } else if let Some(content) = ctx.app.manifests.get(&row.digest) {
        Body::from(content)
    } else if ctx.app.manifests.admits(row.size) {
        Body::from(read_stored(&ctx, &row.digest, row.size).await?)
    } else {
        Body::from_stream(ctx.app.blobs.read(&row.digest, None).await?)
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, &row.media_type)
        .header(header::CONTENT_LENGTH, row.size)
        .header(header::ETAG, format!("\"{}\"", row.digest))
        .header("docker-content-digest", row.digest.to_string())
        .body(body)
        .map_err(anyhow::Error::from)?)
}

/// A small stored manifest, read whole, and kept in memory if it matches its digest
/// (a damaged file is served as stored, for the client to refuse, and for `berth fsck`
/// to report; it is never cached).
async fn read_stored(ctx: &Ctx, digest: &Digest, size: u64) -> Result<Bytes, ApiError> {
    let mut stream = ctx.app.blobs.read(digest, None).await?;
    let mut content = BytesMut::with_capacity(size as usize);
    while let Some(chunk) = stream.next().await {
        content.extend_from_slice(&chunk.map_err(anyhow::Error::from)?);
    }
    let content = content.freeze();
    let mut hasher = oci::DigestHasher::new(digest.algorithm());
    hasher.update(&content);
    if hasher.finish() == *digest {
        ctx.app.manifests.insert(digest.clone(), content.clone());
    } else {
        tracing::warn!(%digest, "stored manifest does not match its digest (run berth fsck)");
    }
    Ok(content)
}

/// Reads a manifest body, refusing more than `limit` bytes.
async fn read_limited(ctx: &Ctx, limit: u64) -> Result<Bytes, ApiError> {
    let too_large = || -> ApiError {
        ErrorCode::ManifestTooLarge
            .msg(format!(
                "manifest is larger than the {limit} bytes this registry accepts"
            ))
            .into()
    };
    if let Some(len) = ctx
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = ctx.take_body();
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ErrorCode::ManifestInvalid.msg(format!("the manifest body could not be read: {e}"))
        })?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// What the metadata records of a parsed manifest stored as `digest`.
pub(crate) fn record<'a>(
    parsed: &'a oci::ParsedManifest,
    digest: &'a Digest,
    size: u64,
    pushed_by: Option<&'a str>,
) -> anyhow::Result<NewManifest<'a>> {
    let annotations = parsed
        .annotations
        .as_ref()
        .filter(|a| !a.is_empty())
        .map(serde_json::to_string)
        .transpose()?;
    Ok(NewManifest {
        digest,
        media_type: &parsed.media_type,
        size,
        artifact_type: parsed.artifact_type.as_deref(),
        subject: parsed.subject.as_ref().map(|s| &s.digest),
        annotations,
        blobs: parsed.required_blobs().map(|d| &d.digest).collect(),
        children: parsed.manifests.iter().map(|d| &d.digest).collect(),
        pushed_by,
    })
}

pub async fn put(ctx: Ctx, repo: RepoName, reference: Reference) -> ApiResult {
    let bytes = read_limited(&ctx, ctx.app.config.limits.manifest_max_bytes).await?;
    let parsed = oci::manifest::parse(&bytes, ctx.header("content-type"))?;
    let digest = match &reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &bytes);
            if &actual != d {
                return Err(ErrorCode::DigestInvalid
                    .msg(format!(
                        "the manifest's content has digest {actual}, not {d}"
                    ))
                    .into());
            }
            actual
        }
        Reference::Tag(_) => Digest::sha256_of(&bytes),
    };
    let tag = match &reference {
        Reference::Tag(t) => Some(t),
        Reference::Digest(_) => None,
    };
    // The bytes first: if the metadata then refuses the manifest, an unreferenced blob
    // is left for garbage collection; the reverse order could record a manifest whose
    // bytes are missing.
    let size = bytes.len() as u64;
    ctx.check_quota(&repo, size, Some(&digest)).await?;
    if ctx.app.blobs.stat(&digest).await? != Some(size) {
        let body = futures_util::stream::once(async move { Ok(bytes) }).boxed();
        ctx.app.blobs.put(&digest, body).await?;
    }
    let new = record(&parsed, &digest, size, ctx.caller.name())?;
    let put = || {
        ctx.app
            .meta
            .put_manifest(&repo, &new, tag, ctx.presence(&digest))
    };
    match crate::meta::retry_conflicts(put).await? {
        PutManifest::MissingReference(missing) => {
            Err(OciError::from(ErrorCode::ManifestBlobUnknown)
                .with_detail(serde_json::json!({ "digest": missing.to_string() }))
                .into())
        }
        PutManifest::Vanished => Err(ErrorCode::ManifestInvalid
            .msg(
                "the manifest was deleted by garbage collection while it was pushed; push it again",
            )
            .into()),
        PutManifest::Stored => {
            ctx.audit("push", format!("{repo}:{reference}@{digest}"))
                .await;
            let mut resp = (
                StatusCode::CREATED,
                [
                    (
                        header::LOCATION,
                        ctx.url(&format!("/v2/{repo}/manifests/{digest}")),
                    ),
                    (header::CONTENT_LENGTH, "0".to_string()),
                    (
                        HeaderName::from_static("docker-content-digest"),
                        digest.to_string(),
                    ),
                ],
            )
                .into_response();
            if let Some(subject) = &parsed.subject {
                resp.headers_mut().insert(
                    "oci-subject",
                    subject
                        .digest
                        .to_string()
                        .parse()
                        .map_err(anyhow::Error::from)?,
                );
            }
            Ok(resp)
        }
    }
}

pub async fn delete(ctx: Ctx, repo: RepoName, reference: Reference) -> ApiResult {
    let deleted = match &reference {
        Reference::Digest(d) => ctx.app.meta.delete_manifest(&repo, d).await?,
        Reference::Tag(t) => ctx.app.meta.delete_tag(&repo, t).await?,
    };
    if deleted {
        ctx.audit("delete", format!("{repo}:{reference}")).await;
        Ok(StatusCode::ACCEPTED.into_response())
    } else {
        Err(ErrorCode::ManifestUnknown
            .msg(format!(
                "manifest {reference} is unknown to repository {repo}"
            ))
            .into())
    }
}
