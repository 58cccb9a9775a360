//! Error policy for the HTTP edge.
//!
//! Handlers return `Result<Response, ApiError>`. Anything a client caused is an
//! [`OciError`] with the spec's code and a message written for the person reading it;
//! anything else (database, disk) is logged with its cause and answered as a 500 that
//! says nothing about internals. Blob storage that cannot be reached (S3 down) is a 503
//! `UNAVAILABLE` with `Retry-After`: a condition to wait out, not a server bug. `anyhow`
//! is used below this layer, never in answers.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use blobstore::BlobError;
use oci::{ErrorCode, OciError};

pub struct ApiError {
    pub error: OciError,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn header(mut self, name: &'static str, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }
}

impl From<OciError> for ApiError {
    fn from(error: OciError) -> Self {
        ApiError {
            error,
            headers: Vec::new(),
        }
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        OciError::from(code).into()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        // Unreachable storage met inside another layer (a presence check in a metadata
        // transaction) is still unreachable storage.
        if let Some(BlobError::Unavailable(cause)) =
            e.chain().find_map(|c| c.downcast_ref::<BlobError>())
        {
            return BlobError::Unavailable(cause.clone()).into();
        }
        tracing::error!(error = format!("{e:#}"), "internal error");
        ErrorCode::Internal.into()
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound => ErrorCode::BlobUnknown.into(),
            BlobError::UploadUnknown => ErrorCode::BlobUploadUnknown.into(),
            BlobError::DigestMismatch { expected, actual } => ErrorCode::DigestInvalid
                .msg(format!(
                    "uploaded content has digest {actual}, not {expected}"
                ))
                .into(),
            BlobError::OffsetMismatch { current } => {
                let range = if current == 0 {
                    "0-0".to_string()
                } else {
                    format!("0-{}", current - 1)
                };
                ApiError::from(ErrorCode::RangeInvalid.msg(format!(
                    "chunk must start at byte {current}, where the upload ends"
                )))
                .header("range", range)
            }
            BlobError::TooLarge { limit } => ErrorCode::SizeInvalid
                .msg(format!("body is larger than the {limit} bytes allowed"))
                .into(),
            BlobError::Body(e) => ErrorCode::BlobUploadInvalid
                .msg(format!(
                    "the request body could not be read completely: {e}"
                ))
                .into(),
            BlobError::Io(e) => anyhow::Error::from(e).context("blob store").into(),
            BlobError::Unavailable(cause) => {
                // Not the client's fault and not a bug here: say so, and when to retry.
                tracing::warn!(error = %cause, "blob storage unavailable");
                ApiError::from(
                    ErrorCode::Unavailable
                        .msg("the blob storage cannot be reached right now; try again shortly"),
                )
                .header("retry-after", "5")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.error.body().to_string(),
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

pub type ApiResult = Result<Response, ApiError>;
