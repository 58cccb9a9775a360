//! Moving a body stream into a file while hashing it, without holding it in memory.
//!
//! The async side receives chunks from the network; a blocking thread hashes and writes
//! them. A bounded channel between the two keeps at most `QUEUE` chunks in flight, so a
//! multi-GiB body costs a few MiB of memory however fast the client sends, and hashing
//! runs in parallel with receiving.
//!
//! A small body that has already arrived whole (most config blobs, manifests and small
//! layers: hyper has read them with the headers) skips the thread and the channel: it
//! is hashed and written in one blocking call.

use std::fs::File;
use std::io::Write;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use oci::DigestHasher;

use crate::{BlobError, ByteStream, Result};

const QUEUE: usize = 32;
/// Bodies up to this size that are already received are written without a pipeline.
const SMALL: usize = 1 << 20;

pub(crate) struct Pumped {
    pub file: File,
    pub hasher: DigestHasher,
    pub written: u64,
}

impl Pumped {
    /// Hashes and writes one chunk.
    fn append(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.hasher.update(chunk);
        self.file.write_all(chunk)?;
        self.written += chunk.len() as u64;
        Ok(())
    }
}

/// `chunks` written to `file` and fed to `hasher`.
fn write_all(file: File, hasher: DigestHasher, chunks: &[Bytes]) -> std::io::Result<Pumped> {
    let mut p = Pumped {
        file,
        hasher,
        written: 0,
    };
    for chunk in chunks {
        p.append(chunk)?;
    }
    Ok(p)
}

fn join_error(e: tokio::task::JoinError) -> BlobError {
    BlobError::Io(std::io::Error::other(e))
}

/// Appends all of `body` to `file` (at its current position), feeding `hasher`.
/// `limit` caps the number of bytes accepted.
pub(crate) async fn pump(
    file: File,
    hasher: DigestHasher,
    mut body: ByteStream,
    limit: Option<u64>,
) -> Result<Pumped> {
    let mut received = 0u64;
    let mut check = |chunk: &Bytes| -> Result<()> {
        received += chunk.len() as u64;
        match limit.filter(|l| received > *l) {
            Some(limit) => Err(BlobError::TooLarge { limit }),
            None => Ok(()),
        }
    };
    // What has arrived already, up to SMALL bytes: the first chunk is awaited, the
    // others taken only if they are ready.
    let mut head: Vec<Bytes> = Vec::new();
    let mut head_len = 0usize;
    let mut ended = false;
    while head_len <= SMALL {
        let next = if head.is_empty() {
            body.next().await
        } else {
            match body.next().now_or_never() {
                Some(next) => next,
                None => break,
            }
        };
        match next {
            None => {
                ended = true;
                break;
            }
            Some(Ok(chunk)) => {
                check(&chunk)?;
                head_len += chunk.len();
                head.push(chunk);
            }
            Some(Err(e)) => return Err(BlobError::Body(e)),
        }
    }
    if ended {
        return tokio::task::spawn_blocking(move || write_all(file, hasher, &head))
            .await
            .map_err(join_error)?
            .map_err(BlobError::Io);
    }

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Pumped> {
        let mut p = write_all(file, hasher, &head)?;
        while let Some(chunk) = rx.blocking_recv() {
            p.append(&chunk)?;
        }
        Ok(p)
    });
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                if let Err(e) = check(&chunk) {
                    failure = Some(e);
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
    let pumped = writer.await.map_err(join_error)??;
    match failure {
        Some(e) => Err(e),
        None => Ok(pumped),
    }
}
