//! The spec's error codes, each knowing its HTTP status, and the error body
//! `{"errors":[{"code","message","detail"}]}`.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// A `Range` / `Content-Range` that does not fit (416).
    RangeInvalid,
    /// A path nothing under `/v2/` handles (404, code `UNSUPPORTED`: the spec has no
    /// "not found" code for endpoints).
    NotFound,
    MethodNotAllowed,
    /// A manifest larger than the configured limit.
    ManifestTooLarge,
    Internal,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "BLOB_UNKNOWN",
            BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid => "DIGEST_INVALID",
            ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid | ManifestTooLarge => "MANIFEST_INVALID",
            ManifestUnknown => "MANIFEST_UNKNOWN",
            NameInvalid => "NAME_INVALID",
            NameUnknown => "NAME_UNKNOWN",
            SizeInvalid => "SIZE_INVALID",
            TagInvalid => "TAG_INVALID",
            Unauthorized => "UNAUTHORIZED",
            Denied => "DENIED",
            Unsupported | MethodNotAllowed | NotFound => "UNSUPPORTED",
            TooManyRequests => "TOOMANYREQUESTS",
            RangeInvalid => "BLOB_UPLOAD_INVALID",
            Internal => "INTERNAL_ERROR",
            Unavailable => "UNAVAILABLE",
        }
    }

    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BlobUnknown | BlobUploadUnknown | ManifestUnknown | NameUnknown | NotFound => 404,
            BlobUploadInvalid | DigestInvalid | ManifestBlobUnknown | ManifestInvalid
            | NameInvalid | SizeInvalid | TagInvalid | Unsupported => 400,
            Unauthorized => 401,
            Denied => 403,
            MethodNotAllowed => 405,
            ManifestTooLarge => 413,
            RangeInvalid => 416,
            TooManyRequests => 429,
            Internal => 500,
            Unavailable => 503,
        }
    }

    pub fn default_message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "blob unknown to registry",
            BlobUploadInvalid => "blob upload invalid",
            BlobUploadUnknown => "blob upload unknown to registry",
            DigestInvalid => "provided digest did not match uploaded content",
            ManifestBlobUnknown => "manifest references a manifest or blob unknown to registry",
            ManifestInvalid => "manifest invalid",
            ManifestUnknown => "manifest unknown to registry",
            NameInvalid => "invalid repository name",
            NameUnknown => "repository name not known to registry",
            SizeInvalid => "provided length did not match content length",
            TagInvalid => "invalid tag",
            Unauthorized => "authentication required",
            Denied => "requested access to the resource is denied",
            Unsupported => "the operation is unsupported",
            TooManyRequests => "too many requests",
            RangeInvalid => "requested range is not satisfiable",
            NotFound => "no such endpoint",
            MethodNotAllowed => "method not allowed on this endpoint",
            ManifestTooLarge => "manifest too large",
            Internal => "internal server error",
            Unavailable => "service unavailable",
        }
    }

    pub fn msg(self, message: impl Into<String>) -> OciError {
        OciError {
            code: self,
            message: message.into(),
            detail: None,
        }
    }
}

/// One protocol error, ready to be rendered.
#[derive(Clone, Debug, PartialEq)]
pub struct OciError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

impl OciError {
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The JSON body the spec defines.
    pub fn body(&self) -> serde_json::Value {
        let mut e = serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
        });
        if let Some(d) = &self.detail {
            e["detail"] = d.clone();
        }
        serde_json::json!({ "errors": [e] })
    }
}

impl From<ErrorCode> for OciError {
    fn from(code: ErrorCode) -> Self {
        code.msg(code.default_message())
    }
}

impl fmt::Display for OciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for OciError {}
