//! Content-addressed blob storage.
//!
//! A [`BlobStore`] keeps blobs by digest and upload sessions by id. Every write streams:
//! bytes go to a temporary object while they are hashed, and become visible under their
//! digest only after the digest matched and the data is durable. Nothing here knows
//! about repositories; which repository may see which blob is the metadata's business.

use std::io;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use oci::Digest;
use uuid::Uuid;

pub mod fs;
mod pump;
pub mod s3;
#[cfg(test)]
mod tests;

pub use fs::FsBlobStore;
pub use s3::{S3BlobStore, S3Config};

/// A stream of blob bytes (to or from the store).
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob not found")]
    NotFound,
    #[error("upload session not found")]
    UploadUnknown,
    #[error("content digest {actual} does not match the requested digest {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// A chunk did not start where the upload currently ends.
    #[error("chunk must start at offset {current}")]
    OffsetMismatch { current: u64 },
    #[error("body is larger than the {limit} bytes allowed")]
    TooLarge { limit: u64 },
    /// The client's body failed (disconnect, length mismatch, timeout).
    #[error("request body: {0}")]
    Body(io::Error),
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    /// The storage could not be reached or failed on its side (S3: connection refused,
    /// timeout, 5xx after retries). Nothing was committed; the client may try again.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    /// When it was written (committed).
    pub modified: SystemTime,
}

/// Where an upload session stands.
#[derive(Debug, Clone)]
pub struct UploadInfo {
    pub id: Uuid,
    pub size: u64,
    pub modified: SystemTime,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of a stored blob, or `None`.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>>;

    /// The blob's bytes, or the inclusive byte range `(first, last)` of them.
    async fn read(&self, digest: &Digest, range: Option<(u64, u64)>) -> Result<ByteStream>;

    /// Stores `body` under `expected` if and only if its content has that digest.
    /// Returns the size.
    async fn put(&self, expected: &Digest, body: ByteStream) -> Result<u64>;

    /// Removes a blob. Returns whether it existed.
    async fn delete(&self, digest: &Digest) -> Result<bool>;

    /// Takes a blob out of service (fsck --repair): it is never served again but kept,
    /// outside the store's namespace, for a person to inspect. Returns whether it
    /// existed.
    async fn quarantine(&self, digest: &Digest) -> Result<bool>;

    /// Every stored blob (for garbage collection and fsck).
    async fn list(&self) -> Result<Vec<BlobInfo>>;

    /// Opens an empty upload session.
    async fn upload_start(&self, id: Uuid) -> Result<()>;

    /// Current size of an upload session.
    async fn upload_info(&self, id: Uuid) -> Result<UploadInfo>;

    /// Appends `body` to an upload. With `start`, the chunk must begin exactly where the
    /// upload ends, else [`BlobError::OffsetMismatch`]. On any failure the upload is
    /// left as it was before the call. Returns the new size.
    async fn upload_append(&self, id: Uuid, start: Option<u64>, body: ByteStream) -> Result<u64>;

    /// Verifies the upload's content against `digest` and commits it as a blob; the
    /// session is gone afterwards. Returns the size.
    async fn upload_finish(&self, id: Uuid, digest: &Digest) -> Result<u64>;

    /// Discards an upload session. Returns whether it existed.
    async fn upload_cancel(&self, id: Uuid) -> Result<bool>;

    /// Removes temporary files of interrupted monolithic uploads not written to since
    /// `idle_since`. Returns how many.
    async fn clean_temporary(&self, idle_since: SystemTime) -> Result<u64>;

    /// Every open upload session (to expire abandoned ones).
    async fn uploads(&self) -> Result<Vec<UploadInfo>>;

    /// A URL valid for `ttl` from which a client can fetch the blob itself (honouring
    /// `Range`), when the store can hand those out; `None`: serve it through [`read`].
    ///
    /// [`read`]: BlobStore::read
    async fn redirect(&self, _digest: &Digest, _ttl: Duration) -> Result<Option<String>> {
        Ok(None)
    }
}
