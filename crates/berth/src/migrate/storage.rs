//! `berth migrate-storage`: copies every blob from one blob store to another (the
//! filesystem store and S3, either way), so a registry can move its blobs without a
//! client pushing anything again.
//!
//! Each blob streams from the source into the destination's `put`, which hashes what it
//! receives and stores it only if it matches the digest: a blob that rotted in the
//! source is reported, never copied. A blob already in the destination with the same
//! size is skipped, so an interrupted run resumes where it stopped, and a second run
//! (with the registry stopped, after a first one while it served) copies only what was
//! pushed meanwhile. Upload sessions in progress are not copied: clients restart them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use blobstore::{BlobError, BlobStore};
use futures_util::stream::{self, StreamExt};
use oci::Digest;

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub blobs: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    /// Already in the destination with the right size.
    pub skipped: u64,
    /// Blobs that could not be copied, with why (a corrupt source blob, an I/O error).
    pub failed: Vec<(Digest, String)>,
}

/// Progress, for a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub bytes: u64,
}

pub async fn copy_blobs(
    from: Arc<dyn BlobStore>,
    to: Arc<dyn BlobStore>,
    jobs: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> anyhow::Result<Report> {
    let list = from.list().await?;
    let total = list.len() as u64;
    let done = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let outcomes: Vec<(Digest, Result<Option<u64>, String>)> = stream::iter(list)
        .map(|info| {
            let (from, to) = (from.clone(), to.clone());
            let (done, bytes) = (&done, &bytes);
            async move {
                let outcome = copy_one(from.as_ref(), to.as_ref(), &info.digest, info.size).await;
                if let Ok(Some(n)) = outcome {
                    bytes.fetch_add(n, Ordering::Relaxed);
                }
                progress(Progress {
                    done: done.fetch_add(1, Ordering::Relaxed) + 1,
                    total,
                    bytes: bytes.load(Ordering::Relaxed),
                });
                (info.digest, outcome)
            }
        })
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    let mut report = Report {
        blobs: total,
        ..Report::default()
    };
    for (digest, outcome) in outcomes {
        match outcome {
            Ok(Some(n)) => {
                report.copied += 1;
                report.copied_bytes += n;
            }
            Ok(None) => report.skipped += 1,
            Err(e) => report.failed.push((digest, e)),
        }
    }
    report.failed.sort_by_key(|f| f.0.to_string());
    Ok(report)
}

/// Copies one blob; `None` if the destination already has it.
async fn copy_one(
    from: &dyn BlobStore,
    to: &dyn BlobStore,
    digest: &Digest,
    size: u64,
) -> Result<Option<u64>, String> {
    match to.stat(digest).await {
        Ok(Some(n)) if n == size => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(format!("destination: {e}")),
    }
    let body = match from.read(digest, None).await {
        Ok(b) => b,
        // Deleted by the garbage collector since the listing: nothing to copy.
        Err(BlobError::NotFound) => return Ok(None),
        Err(e) => return Err(format!("source: {e}")),
    };
    match to.put(digest, body).await {
        Ok(n) => Ok(Some(n)),
        Err(BlobError::DigestMismatch { actual, .. }) => Err(format!(
            "the source's content hashes to {actual}: not copied (berth fsck --repair \
             quarantines it)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blobstore::FsBlobStore;
    use bytes::Bytes;

    fn body(data: &[u8]) -> blobstore::ByteStream {
        let b = Bytes::copy_from_slice(data);
        stream::once(async move { Ok(b) }).boxed()
    }

    async fn put(store: &dyn BlobStore, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        store.put(&d, body(data)).await.unwrap();
        d
    }

    #[tokio::test]
    async fn copies_everything_once_then_only_what_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let from: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(dir.path().join("a")).unwrap());
        let to: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(dir.path().join("b")).unwrap());
        let mut digests = Vec::new();
        for i in 0..20u8 {
            digests.push(put(from.as_ref(), &vec![i; 1000 + i as usize]).await);
        }
        let seen = AtomicU64::new(0);
        let r = copy_blobs(from.clone(), to.clone(), 4, &|p| {
            seen.fetch_max(p.done, Ordering::Relaxed);
            assert_eq!(p.total, 20);
        })
        .await
        .unwrap();
        assert_eq!((r.blobs, r.copied, r.skipped), (20, 20, 0));
        assert!(r.failed.is_empty());
        assert_eq!(seen.load(Ordering::Relaxed), 20);
        for (i, d) in digests.iter().enumerate() {
            assert_eq!(to.stat(d).await.unwrap(), Some(1000 + i as u64));
        }
        // Resumable: a second run copies only the blob pushed meanwhile.
        let new = put(from.as_ref(), b"pushed during the first run").await;
        let r = copy_blobs(from.clone(), to.clone(), 4, &|_| {})
            .await
            .unwrap();
        assert_eq!((r.blobs, r.copied, r.skipped), (21, 1, 20));
        assert_eq!(r.copied_bytes, 27);
        assert!(to.stat(&new).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_corrupt_source_blob_is_reported_and_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBlobStore::open(dir.path().join("a")).unwrap();
        let good = put(&fs, b"good").await;
        let bad = put(&fs, b"will rot").await;
        // Flip the stored bytes behind the store's back (same size).
        let hex = bad.hex();
        let path = walk(fs.root())
            .into_iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(hex))
            })
            .expect("the blob's file");
        std::fs::write(&path, b"was rott").unwrap();
        let from: Arc<dyn BlobStore> = Arc::new(fs);
        let to: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(dir.path().join("b")).unwrap());
        let r = copy_blobs(from, to.clone(), 2, &|_| {}).await.unwrap();
        assert_eq!(r.copied, 1);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0, bad);
        assert!(r.failed[0].1.contains("hashes to"), "{}", r.failed[0].1);
        assert_eq!(to.stat(&bad).await.unwrap(), None);
        assert_eq!(to.stat(&good).await.unwrap(), Some(4));
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
