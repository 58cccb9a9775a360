//! The filesystem blob store: the embedded default.
//!
//! Layout under the root:
//! - `blobs/<alg>/<first two hex>/<hex>`: committed blobs, immutable;
//! - `uploads/<uuid>`: the bytes of an open upload session;
//! - `tmp/<uuid>`: monolithic uploads being received (leftovers of a crash are removed
//!   by garbage collection once idle).
//!
//! A blob is written to a file outside `blobs/`, hashed on the way, fsync'd, and renamed
//! into place only when its digest matches: a crash at any moment leaves either no blob
//! or a complete one. Two pushes of the same blob race harmlessly: both renames install
//! identical content. Upload sessions are plain files, so they survive a restart; the
//! running hash is kept in memory and recomputed from the file when it is missing.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use oci::{Algorithm, Digest, DigestHasher};
use uuid::Uuid;

use crate::pump::{pump, Writeback};
use crate::{BlobError, BlobInfo, BlobStore, ByteStream, Result, UploadInfo};

/// The running hash of an upload, valid for the first `offset` bytes of its file.
#[derive(Default)]
struct UploadState {
    hashed: Option<(u64, DigestHasher)>,
    /// The background sync of the session's file, carried from request to request.
    writeback: Writeback,
}

pub struct FsBlobStore {
    root: PathBuf,
    /// One lock per upload session that this process has touched: requests of one
    /// session are serialised; the state caches its running hash.
    sessions: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<UploadState>>>>,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store under `root`. Several processes may open the
    /// same store (the server and `berth gc`): opening changes nothing.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for d in ["blobs", "uploads", "tmp"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        Ok(FsBlobStore {
            root,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        // The digest is validated: algorithm is a known name, hex is [0-9a-f]{64|128}.
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn upload_path(&self, id: Uuid) -> PathBuf {
        self.root.join("uploads").join(id.to_string())
    }

    fn session(&self, id: Uuid) -> Arc<tokio::sync::Mutex<UploadState>> {
        self.sessions.lock().unwrap().entry(id).or_default().clone()
    }

    fn forget(&self, id: Uuid) {
        self.sessions.lock().unwrap().remove(&id);
    }

    /// Makes `tmp` durable and moves it to the blob's place.
    async fn commit(
        &self,
        tmp: PathBuf,
        file: std::fs::File,
        writeback: Writeback,
        digest: &Digest,
    ) -> Result<()> {
        let dest = self.blob_path(digest);
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            writeback.finish()?;
            // A blob's mtime is when it was committed: garbage collection spares files
            // younger than its grace period, however long the upload took.
            file.set_modified(std::time::SystemTime::now())?;
            file.sync_all()?;
            drop(file);
            let dir = dest.parent().expect("blob path has a parent");
            if let Err(e) = std::fs::rename(&tmp, &dest) {
                // The first blob of its prefix: make the directory, then move it.
                if e.kind() != io::ErrorKind::NotFound || !tmp.exists() {
                    return Err(e);
                }
                std::fs::create_dir_all(dir)?;
                if let Some(parent) = dir.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
                std::fs::rename(&tmp, &dest)?;
            }
            std::fs::File::open(dir)?.sync_all()
        })
        .await
        .map_err(|e| BlobError::Io(io::Error::other(e)))??;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new().append(true).open(path)
}

/// Hashes the first `len` bytes of `path` (used when the running hash is not known,
/// e.g. after a restart, or for an algorithm other than the one kept running).
fn hash_file(path: &Path, algorithm: Algorithm, len: u64) -> io::Result<DigestHasher> {
    let mut h = DigestHasher::new(algorithm);
    if len == 0 {
        return Ok(h);
    }
    let mut f = std::fs::File::open(path)?.take(len);
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        h.update(&buf[..n]);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Io(io::Error::other(e)))?
        .map_err(BlobError::Io)
}

fn not_found_as<T>(r: io::Result<T>, e: BlobError) -> Result<T> {
    r.map_err(|err| {
        if err.kind() == io::ErrorKind::NotFound {
            e
        } else {
            BlobError::Io(err)
        }
    })
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(&self, digest: &Digest, range: Option<(u64, u64)>) -> Result<ByteStream> {
        not_found_as(
            reader::open(self.blob_path(digest), range).await,
            BlobError::NotFound,
        )
    }

    async fn put(&self, expected: &Digest, body: ByteStream) -> Result<u64> {
        let tmp = self.root.join("tmp").join(Uuid::new_v4().to_string());
        let file = std::fs::File::create(&tmp)?;
        let writeback = Writeback::default();
        let hasher = DigestHasher::new(expected.algorithm());
        let result = pump(file, hasher, body, None, &writeback).await;
        let p = match result {
            Ok(p) => p,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let actual = p.hasher.finish();
        if &actual != expected {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.commit(tmp, p.file, writeback, expected).await?;
        Ok(p.written)
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn quarantine(&self, digest: &Digest) -> Result<bool> {
        let dir = self.root.join("quarantine");
        tokio::fs::create_dir_all(&dir).await?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let to = dir.join(format!(
            "{}-{}.{stamp}",
            digest.algorithm().as_str(),
            digest.hex()
        ));
        match tokio::fs::rename(self.blob_path(digest), &to).await {
            Ok(()) => {
                blocking(move || std::fs::File::open(&dir)?.sync_all()).await?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self) -> Result<Vec<BlobInfo>> {
        let root = self.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in read_dir_or_empty(&root)? {
                for prefix in read_dir_or_empty(&alg.path())? {
                    for blob in read_dir_or_empty(&prefix.path())? {
                        let name = format!(
                            "{}:{}",
                            alg.file_name().to_string_lossy(),
                            blob.file_name().to_string_lossy()
                        );
                        // Anything that is not a well-formed digest is not a blob.
                        if let Ok(digest) = name.parse::<Digest>() {
                            let Some(m) = metadata_if_present(&blob)? else {
                                continue;
                            };
                            out.push(BlobInfo {
                                digest,
                                size: m.len(),
                                modified: m.modified()?,
                            });
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn upload_start(&self, id: Uuid) -> Result<()> {
        tokio::fs::File::create(self.upload_path(id)).await?;
        Ok(())
    }

    async fn upload_info(&self, id: Uuid) -> Result<UploadInfo> {
        let m = not_found_as(
            tokio::fs::metadata(self.upload_path(id)).await,
            BlobError::UploadUnknown,
        )?;
        Ok(UploadInfo {
            id,
            size: m.len(),
            modified: m.modified()?,
        })
    }

    async fn upload_append(&self, id: Uuid, start: Option<u64>, body: ByteStream) -> Result<u64> {
        let session = self.session(id);
        let mut state = session.lock().await;
        let path = self.upload_path(id);
        let file = not_found_as(open_append(&path), BlobError::UploadUnknown)?;
        let size = file.metadata()?.len();
        if let Some(start) = start {
            if start != size {
                return Err(BlobError::OffsetMismatch { current: size });
            }
        }
        let hasher = match state.hashed.take() {
            Some((offset, h)) if offset == size => h,
            _ if size == 0 => DigestHasher::new(Algorithm::Sha256),
            _ => {
                let p = path.clone();
                blocking(move || hash_file(&p, Algorithm::Sha256, size)).await?
            }
        };
        match pump(file, hasher.clone(), body, None, &state.writeback).await {
            Ok(p) => {
                let new_size = size + p.written;
                state.hashed = Some((new_size, p.hasher));
                Ok(new_size)
            }
            Err(e) => {
                // Put the session back exactly as it was: all of the chunk or none.
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(size)?;
                state.hashed = Some((size, hasher));
                Err(e)
            }
        }
    }

    async fn upload_finish(&self, id: Uuid, digest: &Digest) -> Result<u64> {
        let session = self.session(id);
        let mut state = session.lock().await;
        let path = self.upload_path(id);
        let file = not_found_as(std::fs::File::open(&path), BlobError::UploadUnknown)?;
        let size = file.metadata()?.len();
        let hasher = match state.hashed.take() {
            Some((offset, h)) if offset == size && h.algorithm() == digest.algorithm() => h,
            _ => {
                let (p, alg) = (path.clone(), digest.algorithm());
                blocking(move || hash_file(&p, alg, size)).await?
            }
        };
        let actual = hasher.clone().finish();
        if &actual != digest {
            state.hashed = Some((size, hasher)).filter(|(_, h)| h.algorithm() == Algorithm::Sha256);
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        self.commit(path, file, state.writeback.clone(), digest)
            .await?;
        drop(state);
        self.forget(id);
        Ok(size)
    }

    async fn upload_cancel(&self, id: Uuid) -> Result<bool> {
        let session = self.session(id);
        let _state = session.lock().await;
        let existed = match tokio::fs::remove_file(self.upload_path(id)).await {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e.into()),
        };
        drop(_state);
        self.forget(id);
        Ok(existed)
    }

    async fn clean_temporary(&self, idle_since: std::time::SystemTime) -> Result<u64> {
        let dir = self.root.join("tmp");
        blocking(move || {
            let mut n = 0;
            for e in read_dir_or_empty(&dir)? {
                let Some(m) = metadata_if_present(&e)? else {
                    continue;
                };
                // A body being received is written continuously; an old one is a leftover.
                if m.modified()? < idle_since && std::fs::remove_file(e.path()).is_ok() {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn uploads(&self) -> Result<Vec<UploadInfo>> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let mut out = Vec::new();
            for e in read_dir_or_empty(&dir)? {
                if let Ok(id) = e.file_name().to_string_lossy().parse::<Uuid>() {
                    let Some(m) = metadata_if_present(&e)? else {
                        continue;
                    };
                    out.push(UploadInfo {
                        id,
                        size: m.len(),
                        modified: m.modified()?,
                    });
                }
            }
            Ok(out)
        })
        .await
    }
}

/// A directory entry's metadata, or `None` if the file went away since the listing (the
/// server commits, finishes and cancels uploads while the collector lists them).
fn metadata_if_present(e: &std::fs::DirEntry) -> io::Result<Option<std::fs::Metadata>> {
    match e.metadata() {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_dir_or_empty(p: &Path) -> io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(p) {
        Ok(rd) => rd.collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Reads of a committed blob: in chunks of `READ_CHUNK`, each read straight into the
/// buffer the response sends (no intermediate copy), one read ahead of the network.
/// Reads of one stream never overlap (the next starts when the previous was taken), so
/// they share the file's position.
mod reader {
    use std::fs::File;
    use std::io;
    use std::io::{Read, Seek, SeekFrom};
    use std::path::PathBuf;
    use std::sync::Arc;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use tokio::task::JoinHandle;

    use crate::ByteStream;

    pub(super) const READ_CHUNK: usize = 1 << 20;

    /// Up to `len` bytes at `offset`, fewer only at the end of the file, read into
    /// the buffer the response sends (not zeroed first: `read_to_end` fills spare
    /// capacity): the bytes are copied once, from the page cache.
    fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    fn spawn_read(file: Arc<File>, offset: u64, len: usize) -> JoinHandle<io::Result<Bytes>> {
        tokio::task::spawn_blocking(move || read_at(&file, offset, len))
    }

    struct State {
        file: Arc<File>,
        /// Where the read in flight ends, and where the stream ends.
        pos: u64,
        end: u64,
        /// The first chunk, read when the file was opened.
        ready: Option<Bytes>,
        /// The read in flight, and how many bytes it must return.
        next: Option<(JoinHandle<io::Result<Bytes>>, usize)>,
    }

    impl State {
        fn read_ahead(&mut self) {
            if self.pos < self.end {
                let len = (self.end - self.pos).min(READ_CHUNK as u64) as usize;
                self.next = Some((spawn_read(self.file.clone(), self.pos, len), len));
                self.pos += len as u64;
            }
        }
    }

    fn short() -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "blob file is shorter than its size",
        )
    }

    /// Opens `path` and reads its first chunk in one blocking call (a small blob is
    /// then served without another), and streams the inclusive range `(first, last)`,
    /// or all of it.
    pub(super) async fn open(path: PathBuf, range: Option<(u64, u64)>) -> io::Result<ByteStream> {
        let (file, first, end) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let file = File::open(path)?;
            let (start, end) = match range {
                Some((first, last)) => (first, last + 1),
                None => (0, file.metadata()?.len()),
            };
            let len = (end - start).min(READ_CHUNK as u64) as usize;
            let first = read_at(&file, start, len)?;
            if first.len() < len {
                return Err(short());
            }
            Ok((file, first, (start + len as u64, end)))
        })
        .await
        .map_err(io::Error::other)??;
        let (pos, end) = end;
        let mut state = State {
            file: Arc::new(file),
            pos,
            end,
            ready: Some(first),
            next: None,
        };
        state.read_ahead();
        Ok(futures_util::stream::unfold(state, |mut s| async move {
            if let Some(first) = s.ready.take().filter(|f| !f.is_empty()) {
                return Some((Ok(first), s));
            }
            let (read, expected) = s.next.take()?;
            match read.await.map_err(io::Error::other).and_then(|r| r) {
                Ok(chunk) if chunk.len() < expected => Some((Err(short()), s)),
                Ok(chunk) => {
                    s.read_ahead();
                    Some((Ok(chunk), s))
                }
                Err(e) => Some((Err(e), s)),
            }
        })
        .boxed())
    }
}
