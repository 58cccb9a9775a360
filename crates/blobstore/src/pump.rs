//! Moving a body stream into a file while hashing it, without holding it in memory.
//!
//! The async side receives chunks from the network; a blocking thread hashes and writes
//! them. A bounded channel between the two keeps at most `QUEUE` chunks in flight, so a
//! multi-GiB body costs a few MiB of memory however fast the client sends, and hashing
//! runs in parallel with receiving.

use std::fs::File;
use std::io::Write;

use futures_util::StreamExt;
use oci::DigestHasher;

use crate::{BlobError, ByteStream, Result};

const QUEUE: usize = 32;

pub(crate) struct Pumped {
    pub file: File,
    pub hasher: DigestHasher,
    pub written: u64,
}

/// Appends all of `body` to `file` (at its current position), feeding `hasher`.
/// `limit` caps the number of bytes accepted.
pub(crate) async fn pump(
    mut file: File,
    mut hasher: DigestHasher,
    mut body: ByteStream,
    limit: Option<u64>,
) -> Result<Pumped> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(QUEUE);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Pumped> {
        let mut written = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            file.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        Ok(Pumped {
            file,
            hasher,
            written,
        })
    });
    let mut received = 0u64;
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                received += chunk.len() as u64;
                if let Some(limit) = limit.filter(|l| received > *l) {
                    failure = Some(BlobError::TooLarge { limit });
                    break;
                }
                if tx.send(chunk).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                failure = Some(BlobError::Body(e));
                break;
            }
        }
    }
    drop(tx);
    let pumped = writer
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
    match failure {
        Some(e) => Err(e),
        None => Ok(pumped),
    }
}
