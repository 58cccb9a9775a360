//! Error policy for the HTTP edge.
//!
//! Handlers return `Result<Response, ApiError>`. Anything a client caused is an
//! [`OciError`] with the spec's code and a message written for the person reading it;
//! anything else (database, disk) is logged with its cause and answered as a 500 that
//! says nothing about internals — except storage that cannot be reached: a metadata
//! database restarting, failing over or out of connections, or blob storage (S3) down.
//! Those are a 503 `UNAVAILABLE` with `Retry-After`: a condition to wait out, not a
//! server bug, and the request changed nothing, so it may simply be sent again. So is a
//! transaction the database aborted for a concurrent one (`meta::conflict`), with
//! `Retry-After: 1`.
//! `anyhow` is used below this layer, never in answers.

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
        if database_unavailable(&e) {
            tracing::warn!(error = format!("{e:#}"), "metadata database unavailable");
            return ApiError::from(
                ErrorCode::Unavailable.msg("the registry's database is unavailable; try again"),
            )
            .header("retry-after", "5");
        }
        // What retries could not get through (or a write that is not retried): the
        // client's own retry can.
        if crate::meta::conflict(&e).is_some() {
            tracing::warn!(
                error = format!("{e:#}"),
                "transaction conflicted with a concurrent one"
            );
            return ApiError::from(
                ErrorCode::Unavailable
                    .msg("the change conflicted with a concurrent one and was not made; try again"),
            )
            .header("retry-after", "1");
        }
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

/// Whether `e` says the database could not be reached or is going away, rather than
/// that a query was wrong: the connection failed or broke, the pool waited in vain, or
/// the server said it is shutting down, starting up, out of connections or failed over.
pub fn database_unavailable(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                // SQLSTATE classes 08 (connection exception), 57P01..57P03 (admin or crash
                // shutdown, cannot connect now), 53300 (too many connections), 25006
                // (read-only transaction: a standby after a failover).
                code.starts_with("08")
                    || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300" | "25006")
            }),
            _ => false,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: anyhow::Error) -> (u16, Option<String>) {
        let r = ApiError::from(e).into_response();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), retry)
    }

    #[test]
    fn an_unreachable_database_is_a_503_to_retry_and_a_bad_query_a_500() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for e in [
            anyhow::Error::from(sqlx::Error::PoolTimedOut).context("linking a blob"),
            anyhow::Error::from(sqlx::Error::Io(refused)),
            anyhow::Error::from(sqlx::Error::PoolClosed)
                .context("a")
                .context("b"),
        ] {
            assert_eq!(status(e), (503, Some("5".into())));
        }
        assert_eq!(
            status(anyhow::Error::from(sqlx::Error::RowNotFound)),
            (500, None)
        );
        assert_eq!(status(anyhow::anyhow!("disk full")), (500, None));
    }
}
