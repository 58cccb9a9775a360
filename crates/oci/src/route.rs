//! `/v2/…` paths parsed into an [`Endpoint`] before anything is handled.
//!
//! Repository names contain slashes, so a path is read from its end: the last segments
//! say which endpoint it is, everything before them is the name. The raw (undecoded)
//! path is parsed, so `%2e%2e` is simply an invalid name, never `..`.

use crate::{Digest, ErrorCode, OciError, Reference, RepoName};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    Blob(RepoName, Digest),
    UploadStart(RepoName),
    Upload(RepoName, Uuid),
    Referrers(RepoName, Digest),
}

fn name(segments: &[&str]) -> Result<RepoName, OciError> {
    let s = segments.join("/");
    s.parse::<RepoName>().map_err(|e| {
        ErrorCode::NameInvalid
            .msg(e.to_string())
            .with_detail(serde_json::json!({ "name": s }))
    })
}

fn digest(s: &str) -> Result<Digest, OciError> {
    s.parse::<Digest>().map_err(|e| {
        ErrorCode::DigestInvalid
            .msg(e.to_string())
            .with_detail(serde_json::json!({ "digest": s }))
    })
}

fn not_found() -> OciError {
    ErrorCode::NotFound.into()
}

/// Parses the path of a request (starting with `/v2`).
pub fn parse(path: &str) -> Result<Endpoint, OciError> {
    let rest = path.strip_prefix("/v2").ok_or_else(not_found)?;
    if rest.is_empty() || rest == "/" {
        return Ok(Endpoint::Base);
    }
    let rest = rest.strip_prefix('/').ok_or_else(not_found)?;
    if rest == "_catalog" {
        return Ok(Endpoint::Catalog);
    }
    let seg: Vec<&str> = rest.split('/').collect();
    let n = seg.len();
    // .../blobs/uploads/ and .../blobs/uploads/<id>
    if n >= 3 && seg[n - 3] == "blobs" && seg[n - 2] == "uploads" {
        let repo = name(&seg[..n - 3])?;
        if seg[n - 1].is_empty() {
            return Ok(Endpoint::UploadStart(repo));
        }
        return match seg[n - 1].parse::<Uuid>() {
            Ok(id) => Ok(Endpoint::Upload(repo, id)),
            Err(_) => {
                Err(ErrorCode::BlobUploadUnknown.msg("upload id is not a known upload session"))
            }
        };
    }
    if n >= 2 {
        let (head, kind, last) = (&seg[..n - 2], seg[n - 2], seg[n - 1]);
        match kind {
            "blobs" if last == "uploads" => return Ok(Endpoint::UploadStart(name(head)?)),
            "blobs" => {
                let repo = name(head)?;
                return Ok(Endpoint::Blob(repo, digest(last)?));
            }
            "manifests" => {
                let repo = name(head)?;
                let reference = last.parse::<Reference>().map_err(|e| match e {
                    crate::reference::ReferenceError::Digest(e) => {
                        ErrorCode::DigestInvalid.msg(e.to_string())
                    }
                    e => ErrorCode::TagInvalid.msg(e.to_string()),
                })?;
                return Ok(Endpoint::Manifest(repo, reference));
            }
            "referrers" => {
                let repo = name(head)?;
                return Ok(Endpoint::Referrers(repo, digest(last)?));
            }
            "tags" if last == "list" => return Ok(Endpoint::Tags(name(head)?)),
            _ => {}
        }
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn code(path: &str) -> &'static str {
        parse(path).unwrap_err().code.as_str()
    }

    #[test]
    fn parses_every_endpoint() {
        let r = |s: &str| s.parse::<RepoName>().unwrap();
        assert_eq!(parse("/v2/").unwrap(), Endpoint::Base);
        assert_eq!(parse("/v2").unwrap(), Endpoint::Base);
        assert_eq!(parse("/v2/_catalog").unwrap(), Endpoint::Catalog);
        assert_eq!(
            parse("/v2/a/b/tags/list").unwrap(),
            Endpoint::Tags(r("a/b"))
        );
        assert!(matches!(
            parse("/v2/a/manifests/latest").unwrap(),
            Endpoint::Manifest(_, Reference::Tag(_))
        ));
        assert!(matches!(
            parse(&format!("/v2/a/manifests/{D}")).unwrap(),
            Endpoint::Manifest(_, Reference::Digest(_))
        ));
        assert_eq!(
            parse(&format!("/v2/a/blobs/{D}")).unwrap(),
            Endpoint::Blob(r("a"), D.parse().unwrap())
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/").unwrap(),
            Endpoint::UploadStart(r("a"))
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads").unwrap(),
            Endpoint::UploadStart(r("a"))
        );
        let id = Uuid::new_v4();
        assert_eq!(
            parse(&format!("/v2/x/y/blobs/uploads/{id}")).unwrap(),
            Endpoint::Upload(r("x/y"), id)
        );
        assert_eq!(
            parse(&format!("/v2/a/referrers/{D}")).unwrap(),
            Endpoint::Referrers(r("a"), D.parse().unwrap())
        );
        // Names may contain the words the parser looks for.
        assert_eq!(
            parse("/v2/blobs/manifests/tags/list").unwrap(),
            Endpoint::Tags(r("blobs/manifests"))
        );
        assert_eq!(
            parse("/v2/tags/list/tags/list").unwrap(),
            Endpoint::Tags(r("tags/list"))
        );
    }

    #[test]
    fn refuses_bad_input_with_the_right_code() {
        assert_eq!(code("/v2/UPPER/tags/list"), "NAME_INVALID");
        assert_eq!(code("/v2/%2e%2e/tags/list"), "NAME_INVALID");
        assert_eq!(code("/v2/a/../b/tags/list"), "NAME_INVALID");
        assert_eq!(code("/v2//a/tags/list"), "NAME_INVALID");
        assert_eq!(code("/v2/a/blobs/sha256:xyz"), "DIGEST_INVALID");
        assert_eq!(code("/v2/a/blobs/md5:abc"), "DIGEST_INVALID");
        assert_eq!(code("/v2/a/blobs/uploads/../../etc"), "UNSUPPORTED");
        assert_eq!(
            code("/v2/a/blobs/uploads/not-a-uuid"),
            "BLOB_UPLOAD_UNKNOWN"
        );
        assert_eq!(
            code(&format!("/v2/a/manifests/{}", "t".repeat(129))),
            "TAG_INVALID"
        );
        assert_eq!(
            code(&format!("/v2/{}/tags/list", "a".repeat(256))),
            "NAME_INVALID"
        );
        assert_eq!(code("/v2/a/nothing"), "UNSUPPORTED");
        assert_eq!(code("/v2/a"), "UNSUPPORTED");
        assert_eq!(code("/v2x"), "UNSUPPORTED");
    }
}
