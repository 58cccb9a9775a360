//! Moving a body stream into a file while hashing it, without holding it in memory.
//!
//! The async side receives chunks from the network; a blocking thread hashes and writes
//! them. A bounded channel between the two keeps at most `QUEUE` chunks in flight, so a
//! multi-GiB body costs a few MiB of memory however fast the client sends, and hashing
//! runs in parallel with receiving.
//!
//! A large body is also being written back to disk while it arrives: every
//! `FLUSH_STEP` bytes, a helper thread asks the kernel to write out what the file holds
//! so far (`fdatasync`), so that the sync before the blob is acknowledged finds about a
//! step still dirty instead of the whole body (the kernel would otherwise start writing
//! only at its dirty-memory threshold, gigabytes later). Receiving, hashing and the disk
//! then run side by side, and a synced push approaches the slower of the hash and the
//! disk rather than their sum. The requests of one upload session share their
//! [`Writeback`], so a chunk's sync runs on while the client sends the next one.
//!
//! A small body that has already arrived whole (most config blobs, manifests and small
//! layers: hyper has read them with the headers) skips the thread and the channel: it
//! is hashed and written in one blocking call.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use oci::DigestHasher;

use crate::{BlobError, ByteStream, Result};

const QUEUE: usize = 32;
/// How much is written between two background syncs of a large body.
const FLUSH_STEP: u64 = 8 << 20;
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
fn write_all(
    file: File,
    hasher: DigestHasher,
    chunks: &[Bytes],
    writeback: &Writeback,
) -> std::io::Result<Pumped> {
    let mut p = Pumped {
        file,
        hasher,
        written: 0,
    };
    for chunk in chunks {
        p.append(chunk)?;
    }
    writeback.wrote(&p.file, p.written as usize)?;
    Ok(p)
}

/// Background writeback of a file being appended to (see the module's doc), shared by
/// the requests of one upload session. At most one sync runs at a time; a step reached
/// while one runs waits for the next step. An error of a background sync is kept: a
/// failed writeback that it saw would not be reported again to the final sync, so
/// [`Writeback::finish`] reports it instead, every time it is asked.
#[derive(Clone, Default)]
pub(crate) struct Writeback(Arc<Mutex<Flusher>>);

#[derive(Default)]
struct Flusher {
    unsynced: u64,
    running: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    failed: Option<(std::io::ErrorKind, String)>,
}

impl Flusher {
    /// Waits for the sync that runs, if any, and reports any sync that failed.
    fn settle(&mut self) -> std::io::Result<()> {
        if let Some(sync) = self.running.take() {
            let result = sync
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("writeback thread panicked")));
            if let Err(e) = result {
                self.failed = Some((e.kind(), e.to_string()));
            }
        }
        match &self.failed {
            Some((kind, msg)) => Err(std::io::Error::new(
                *kind,
                format!("writing the file back to disk failed: {msg}"),
            )),
            None => Ok(()),
        }
    }
}

impl Writeback {
    /// Notes that `n` more bytes were written to `file`, and starts a sync of it if a
    /// step is complete and no sync runs.
    fn wrote(&self, file: &File, n: usize) -> std::io::Result<()> {
        let mut f = self.0.lock().unwrap();
        f.unsynced += n as u64;
        if f.unsynced < FLUSH_STEP || f.running.as_ref().is_some_and(|s| !s.is_finished()) {
            return Ok(());
        }
        f.settle()?;
        let file = file.try_clone()?;
        f.running = Some(
            std::thread::Builder::new()
                .name("berth-writeback".into())
                .spawn(move || file.sync_data())?,
        );
        f.unsynced = 0;
        Ok(())
    }

    /// Waits for the sync that runs, if any: blocking. `Err` if any sync failed.
    pub(crate) fn finish(&self) -> std::io::Result<()> {
        self.0.lock().unwrap().settle()
    }
}

fn join_error(e: tokio::task::JoinError) -> BlobError {
    BlobError::Io(std::io::Error::other(e))
}

/// Appends all of `body` to `file` (at its current position), feeding `hasher`, with
/// `writeback` syncing it in the background. `limit` caps the number of bytes accepted.
pub(crate) async fn pump(
    file: File,
    hasher: DigestHasher,
    mut body: ByteStream,
    limit: Option<u64>,
    writeback: &Writeback,
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
        let writeback = writeback.clone();
        return tokio::task::spawn_blocking(move || write_all(file, hasher, &head, &writeback))
            .await
            .map_err(join_error)?
            .map_err(BlobError::Io);
    }

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let writeback = writeback.clone();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Pumped> {
        let mut p = write_all(file, hasher, &head, &writeback)?;
        while let Some(chunk) = rx.blocking_recv() {
            p.append(&chunk)?;
            writeback.wrote(&p.file, chunk.len())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(w: &Writeback) -> (u64, bool) {
        let f = w.0.lock().unwrap();
        (f.unsynced, f.running.is_some())
    }

    #[test]
    fn a_sync_starts_every_step_and_one_at_a_time() {
        let file = tempfile::tempfile().unwrap();
        let w = Writeback::default();
        w.wrote(&file, (FLUSH_STEP - 1) as usize).unwrap();
        assert_eq!(state(&w), (FLUSH_STEP - 1, false));
        w.wrote(&file, 1).unwrap();
        assert_eq!(state(&w), (0, true), "a full step starts a sync");
        // While it runs, further steps accumulate instead of starting another.
        let running = std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(())
        });
        w.0.lock().unwrap().running = Some(running);
        w.wrote(&file, FLUSH_STEP as usize * 2).unwrap();
        assert_eq!(state(&w), (FLUSH_STEP * 2, true));
        w.finish().unwrap();
        assert_eq!(state(&w), (FLUSH_STEP * 2, false));
        w.wrote(&file, 1).unwrap();
        assert_eq!(
            state(&w),
            (0, true),
            "the next write after it starts the next sync"
        );
        w.finish().unwrap();
    }

    #[test]
    fn a_failed_background_sync_fails_every_later_finish() {
        let file = tempfile::tempfile().unwrap();
        let w = Writeback::default();
        w.0.lock().unwrap().running = Some(std::thread::spawn(|| {
            Err(std::io::Error::other("EIO from the disk"))
        }));
        for _ in 0..2 {
            let e = w.finish().unwrap_err();
            assert!(e.to_string().contains("EIO from the disk"), "{e}");
        }
        // Nor does a later step hide it.
        assert!(w.wrote(&file, FLUSH_STEP as usize).is_err());
        assert!(w.finish().is_err());
    }
}
