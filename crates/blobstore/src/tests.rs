//! What every [`BlobStore`] promises, checked against each implementation: the same test
//! bodies run as `tests::fs::*` (a temporary directory) and `tests::s3::*` (a real S3
//! server named by `BERTH_TEST_S3_*`, a fresh key prefix per test; see
//! `tests/services/start.sh`). Without those variables the S3 tests say so loudly and
//! pass, unless `BERTH_TEST_REQUIRE_SERVICES=1`.
//!
//! "Another instance" is a second store opened over the same storage: for S3 that is
//! exactly what another replica, or the same one after a restart, is.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use oci::{Algorithm, Digest};
use uuid::Uuid;

use crate::s3::MIN_PART_SIZE;
use crate::{BlobError, BlobStore, ByteStream, FsBlobStore, S3BlobStore, S3Config};

/// Part size of the S3 stores under test (the smallest S3 allows, to keep data small).
const PART: usize = MIN_PART_SIZE;

#[async_trait]
pub(crate) trait Backend: Sized + Send + Sync {
    /// `None`: the backend is not available here (the test is skipped).
    async fn setup() -> Option<Self>;
    /// A new store over the same storage.
    fn instance(&self) -> Arc<dyn BlobStore>;
    /// The bytes of every quarantined blob.
    async fn quarantined(&self) -> Vec<Vec<u8>>;
    /// How many temporary files or objects exist.
    async fn temporaries(&self) -> usize;
    /// Removes what the test stored.
    async fn cleanup(&self) {}
}

pub(crate) struct FsBackend(tempfile::TempDir);

#[async_trait]
impl Backend for FsBackend {
    async fn setup() -> Option<Self> {
        Some(FsBackend(tempfile::tempdir().unwrap()))
    }
    fn instance(&self) -> Arc<dyn BlobStore> {
        Arc::new(FsBlobStore::open(self.0.path()).unwrap())
    }
    async fn quarantined(&self) -> Vec<Vec<u8>> {
        match std::fs::read_dir(self.0.path().join("quarantine")) {
            Ok(rd) => rd
                .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
    async fn temporaries(&self) -> usize {
        std::fs::read_dir(self.0.path().join("tmp"))
            .unwrap()
            .count()
    }
}

pub(crate) struct S3Backend {
    pub config: S3Config,
    /// For looking at the bucket directly.
    pub raw: S3BlobStore,
}

/// The test S3 server from the environment, or `None` (after saying so).
pub(crate) fn s3_config() -> Option<S3Config> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(endpoint), Some(bucket), Some(key), Some(secret)) = (
        var("BERTH_TEST_S3_ENDPOINT"),
        var("BERTH_TEST_S3_BUCKET"),
        var("BERTH_TEST_S3_ACCESS_KEY_ID"),
        var("BERTH_TEST_S3_SECRET_ACCESS_KEY"),
    ) else {
        if std::env::var("BERTH_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("BERTH_TEST_REQUIRE_SERVICES=1 but BERTH_TEST_S3_* is not set (source the env file of tests/services/start.sh)");
        }
        eprintln!(
            "\n*** SKIPPED: no S3 server (BERTH_TEST_S3_ENDPOINT etc. unset; run tests/services/start.sh and source its env) ***\n"
        );
        return None;
    };
    Some(S3Config {
        endpoint,
        region: var("BERTH_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
        bucket,
        prefix: format!("test-{}", Uuid::new_v4()),
        access_key_id: key,
        secret_access_key: secret,
        part_size: PART,
        ..S3Config::default()
    })
}

#[async_trait]
impl Backend for S3Backend {
    async fn setup() -> Option<Self> {
        let config = s3_config()?;
        let raw = S3BlobStore::open(config.clone())
            .await
            .expect("the test S3 bucket answers");
        Some(S3Backend { config, raw })
    }
    fn instance(&self) -> Arc<dyn BlobStore> {
        Arc::new(S3BlobStore::new(self.config.clone()).unwrap())
    }
    async fn quarantined(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for key in self.keys("_quarantine").await {
            out.push(self.object(&key).await.to_vec());
        }
        out
    }
    async fn temporaries(&self) -> usize {
        self.keys("_tmp").await.len()
    }
    async fn cleanup(&self) {
        for key in self.keys("").await {
            let _ = object_store::ObjectStore::delete(
                self.raw.ctl.as_ref(),
                &object_store::path::Path::from(key),
            )
            .await;
        }
    }
}

impl S3Backend {
    /// Every key under `<prefix>/<dir>`, in full.
    pub async fn keys(&self, dir: &str) -> Vec<String> {
        let p = object_store::path::Path::from(format!("{}/{dir}", self.raw.prefix));
        object_store::ObjectStore::list(self.raw.ctl.as_ref(), Some(&p))
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await
    }

    pub async fn object(&self, key: &str) -> Bytes {
        object_store::ObjectStore::get(self.raw.ctl.as_ref(), &object_store::path::Path::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    }

    pub async fn state(&self, id: Uuid) -> serde_json::Value {
        let key = format!("{}/_uploads/{id}/state.json", self.raw.prefix);
        serde_json::from_slice(&self.object(&key).await).unwrap()
    }
}

macro_rules! suite {
    ($backend:ty: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                if let Some(b) = <$backend as crate::tests::Backend>::setup().await {
                    crate::tests::$name(&b).await;
                    crate::tests::Backend::cleanup(&b).await;
                }
            }
        )*
    };
}

macro_rules! shared_suite {
    ($backend:ty) => {
        suite!($backend:
            quarantine_takes_a_blob_out_of_service_and_keeps_its_bytes,
            put_verifies_and_reads_back_with_ranges,
            uploads_append_check_offsets_and_survive_reopen,
            a_failed_chunk_leaves_the_upload_as_it_was,
            an_upload_of_several_parts_continues_on_other_instances,
            a_large_put_streams_and_a_wrong_digest_commits_nothing,
            ranged_reads_cross_part_boundaries,
            uploads_are_listed_and_cancelling_discards_them,
            clean_temporary_removes_what_an_interrupted_put_left,
            an_empty_upload_commits_the_empty_blob,
        );
    };
}

mod fs {
    shared_suite!(crate::tests::FsBackend);
}

mod s3 {
    shared_suite!(crate::tests::S3Backend);
    suite!(crate::tests::S3Backend:
        s3_session_state_names_its_parts_and_tail,
        s3_a_failed_chunk_across_a_part_boundary_leaves_the_state_untouched,
        s3_a_restart_mid_upload_loses_nothing,
        s3_a_digest_mismatch_after_assembly_commits_nothing,
        s3_redirect_urls_serve_the_blob_and_its_ranges,
        s3_credentials_come_from_a_file,
        s3_storage_failing_mid_chunk_leaves_the_upload_as_it_was,
        s3_racing_appends_in_one_part_never_commit_a_wrong_blob,
        s3_racing_appends_across_parts_never_commit_a_wrong_blob,
        s3_a_session_larger_than_one_copy_is_streamed_into_place,
    );

    #[tokio::test]
    async fn s3_an_unreachable_endpoint_is_unavailable() {
        super::an_unreachable_endpoint_is_unavailable().await;
    }

    #[tokio::test]
    async fn s3_server_errors_are_unavailable() {
        super::server_errors_are_unavailable().await;
    }
}

pub(crate) fn body(parts: &[&'static [u8]]) -> ByteStream {
    let parts: Vec<&'static [u8]> = parts.to_vec();
    stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p)))).boxed()
}

/// `data` as a body of `piece`-byte network chunks.
pub(crate) fn pieces(data: Bytes, piece: usize) -> ByteStream {
    let n = data.len().div_ceil(piece);
    stream::iter((0..n).map(move |i| Ok(data.slice(i * piece..((i + 1) * piece).min(data.len())))))
        .boxed()
}

/// Reproducible bytes that differ from part to part.
pub(crate) fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

pub(crate) async fn read_all(s: ByteStream) -> Vec<u8> {
    let chunks: Vec<_> = s.collect().await;
    chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect()
}

fn broken_after(data: Bytes) -> ByteStream {
    stream::iter(vec![
        Ok(data),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone")),
    ])
    .boxed()
}

async fn quarantine_takes_a_blob_out_of_service_and_keeps_its_bytes(b: &impl Backend) {
    let s = b.instance();
    let data: &'static [u8] = b"bytes to look at later";
    let d = Digest::sha256_of(data);
    s.put(&d, body(&[data])).await.unwrap();
    assert!(s.quarantine(&d).await.unwrap());
    assert_eq!(s.stat(&d).await.unwrap(), None);
    assert!(s.list().await.unwrap().is_empty());
    assert_eq!(b.quarantined().await, vec![data.to_vec()]);
    assert!(!s.quarantine(&d).await.unwrap(), "already gone");
}

async fn put_verifies_and_reads_back_with_ranges(b: &impl Backend) {
    let s = b.instance();
    let d = Digest::sha256_of(b"hello world");
    assert_eq!(s.put(&d, body(&[b"hello ", b"world"])).await.unwrap(), 11);
    assert_eq!(s.stat(&d).await.unwrap(), Some(11));
    assert_eq!(
        read_all(s.read(&d, None).await.unwrap()).await,
        b"hello world"
    );
    assert_eq!(
        read_all(s.read(&d, Some((6, 10))).await.unwrap()).await,
        b"world"
    );
    let wrong = Digest::sha256_of(b"other");
    assert!(matches!(
        s.put(&wrong, body(&[b"hello"])).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert_eq!(s.stat(&wrong).await.unwrap(), None);
    assert_eq!(b.temporaries().await, 0);
    let listed = s.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((&listed[0].digest, listed[0].size), (&d, 11));
    assert!(listed[0].modified > SystemTime::now() - Duration::from_secs(600));
    assert!(s.delete(&d).await.unwrap());
    assert!(!s.delete(&d).await.unwrap());
    assert!(matches!(s.read(&d, None).await, Err(BlobError::NotFound)));
}

async fn uploads_append_check_offsets_and_survive_reopen(b: &impl Backend) {
    let id = Uuid::new_v4();
    {
        let s = b.instance();
        s.upload_start(id).await.unwrap();
        assert_eq!(
            s.upload_append(id, Some(0), body(&[b"abc"])).await.unwrap(),
            3
        );
        assert!(matches!(
            s.upload_append(id, Some(0), body(&[b"abc"])).await,
            Err(BlobError::OffsetMismatch { current: 3 })
        ));
    }
    // A new process: the running hash is gone and is rebuilt from the stored bytes.
    let s = b.instance();
    assert_eq!(s.upload_info(id).await.unwrap().size, 3);
    assert_eq!(s.upload_append(id, None, body(&[b"def"])).await.unwrap(), 6);
    let d512 = Digest::of(Algorithm::Sha512, b"abcdef");
    assert!(matches!(
        s.upload_finish(id, &Digest::sha256_of(b"x")).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert_eq!(s.upload_finish(id, &d512).await.unwrap(), 6);
    assert_eq!(
        read_all(s.read(&d512, None).await.unwrap()).await,
        b"abcdef"
    );
    assert!(matches!(
        s.upload_info(id).await,
        Err(BlobError::UploadUnknown)
    ));
    assert!(matches!(
        s.upload_append(id, None, body(&[b"x"])).await,
        Err(BlobError::UploadUnknown)
    ));
}

async fn a_failed_chunk_leaves_the_upload_as_it_was(b: &impl Backend) {
    let s = b.instance();
    let id = Uuid::new_v4();
    s.upload_start(id).await.unwrap();
    s.upload_append(id, None, body(&[b"abc"])).await.unwrap();
    assert!(matches!(
        s.upload_append(id, None, broken_after(Bytes::from_static(b"zzz")))
            .await,
        Err(BlobError::Body(_))
    ));
    assert_eq!(s.upload_info(id).await.unwrap().size, 3);
    s.upload_append(id, Some(3), body(&[b"def"])).await.unwrap();
    s.upload_finish(id, &Digest::sha256_of(b"abcdef"))
        .await
        .unwrap();
}

/// Three parts and a tail, sent in chunks that do not line up with parts, each chunk
/// through a new instance (another replica), finished on yet another.
async fn an_upload_of_several_parts_continues_on_other_instances(b: &impl Backend) {
    let data = pattern(3 * PART + 123_457, 1);
    let digest = Digest::sha256_of(&data);
    let id = Uuid::new_v4();
    b.instance().upload_start(id).await.unwrap();
    let chunk = PART / 2 + 4099;
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let replica = b.instance();
        let size = replica
            .upload_append(
                id,
                Some(offset as u64),
                pieces(data.slice(offset..end), 65_536),
            )
            .await
            .unwrap();
        assert_eq!(size, end as u64);
        assert_eq!(b.instance().upload_info(id).await.unwrap().size, size);
        offset = end;
    }
    let last = b.instance();
    assert_eq!(
        last.upload_finish(id, &digest).await.unwrap(),
        data.len() as u64
    );
    let other = b.instance();
    assert_eq!(other.stat(&digest).await.unwrap(), Some(data.len() as u64));
    assert_eq!(
        read_all(other.read(&digest, None).await.unwrap()).await,
        data
    );
    assert!(other.uploads().await.unwrap().is_empty());
}

async fn a_large_put_streams_and_a_wrong_digest_commits_nothing(b: &impl Backend) {
    let s = b.instance();
    let data = pattern(2 * PART + PART / 2, 2);
    let digest = Digest::sha256_of(&data);
    let wrong = Digest::sha256_of(b"something else");
    assert!(matches!(
        s.put(&wrong, pieces(data.clone(), 100_000)).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert_eq!(s.stat(&wrong).await.unwrap(), None);
    assert_eq!(s.stat(&digest).await.unwrap(), None);
    assert!(s.list().await.unwrap().is_empty());
    assert_eq!(b.temporaries().await, 0);
    // A body that fails half-way commits nothing either.
    let cut = stream::iter(vec![
        Ok(data.slice(..PART + 10)),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone")),
    ])
    .boxed();
    assert!(matches!(s.put(&digest, cut).await, Err(BlobError::Body(_))));
    assert_eq!(s.stat(&digest).await.unwrap(), None);
    assert_eq!(b.temporaries().await, 0);
    assert_eq!(
        s.put(&digest, pieces(data.clone(), 100_000)).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(
        read_all(b.instance().read(&digest, None).await.unwrap()).await,
        data
    );
    assert_eq!(b.temporaries().await, 0);
}

async fn ranged_reads_cross_part_boundaries(b: &impl Backend) {
    let s = b.instance();
    let data = pattern(2 * PART + 1000, 3);
    let digest = Digest::sha256_of(&data);
    s.put(&digest, pieces(data.clone(), 1 << 20)).await.unwrap();
    for (first, last) in [
        (0, 0),
        (PART - 5, PART + 5),
        (PART, 2 * PART - 1),
        (10, data.len() - 1),
        (data.len() - 1, data.len() - 1),
    ] {
        let got = read_all(
            s.read(&digest, Some((first as u64, last as u64)))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got, &data[first..=last], "range {first}-{last}");
    }
}

async fn uploads_are_listed_and_cancelling_discards_them(b: &impl Backend) {
    let s = b.instance();
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    s.upload_start(a).await.unwrap();
    s.upload_start(c).await.unwrap();
    s.upload_append(a, None, pieces(pattern(PART + 10, 4), 65_536))
        .await
        .unwrap();
    let mut listed: Vec<(Uuid, u64)> = b
        .instance()
        .uploads()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.id, u.size))
        .collect();
    listed.sort();
    let mut expected = vec![(a, PART as u64 + 10), (c, 0)];
    expected.sort();
    assert_eq!(listed, expected);
    let modified = s.upload_info(a).await.unwrap().modified;
    assert!(modified > SystemTime::now() - Duration::from_secs(600));
    assert!(b.instance().upload_cancel(a).await.unwrap());
    assert!(!s.upload_cancel(a).await.unwrap());
    assert!(matches!(
        s.upload_info(a).await,
        Err(BlobError::UploadUnknown)
    ));
    let left: Vec<Uuid> = s
        .uploads()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(left, vec![c]);
}

/// A put whose process dies mid-body leaves a temporary; the collector's call removes
/// it once idle, and spares it while fresh.
async fn clean_temporary_removes_what_an_interrupted_put_left(b: &impl Backend) {
    let s = b.instance();
    let data = pattern(PART + 100, 5);
    let digest = Digest::sha256_of(b"never completed");
    let stalled = stream::iter(vec![Ok(data)])
        .chain(stream::pending())
        .boxed();
    let put = {
        let s = s.clone();
        tokio::spawn(async move { s.put(&digest, stalled).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while b.temporaries().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no temporary appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the part's upload time to finish, then "crash".
    tokio::time::sleep(Duration::from_millis(500)).await;
    put.abort();
    let _ = put.await;
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(s.clean_temporary(an_hour_ago).await.unwrap(), 0);
    assert!(b.temporaries().await > 0);
    let later = SystemTime::now() + Duration::from_secs(5);
    assert!(b.instance().clean_temporary(later).await.unwrap() >= 1);
    assert_eq!(b.temporaries().await, 0);
    assert!(s.list().await.unwrap().is_empty());
}

async fn an_empty_upload_commits_the_empty_blob(b: &impl Backend) {
    let s = b.instance();
    let id = Uuid::new_v4();
    s.upload_start(id).await.unwrap();
    assert_eq!(s.upload_append(id, Some(0), body(&[])).await.unwrap(), 0);
    let empty = Digest::sha256_of(b"");
    assert_eq!(b.instance().upload_finish(id, &empty).await.unwrap(), 0);
    assert_eq!(s.stat(&empty).await.unwrap(), Some(0));
    assert!(read_all(s.read(&empty, None).await.unwrap())
        .await
        .is_empty());
}

// --- S3 only ---

/// A body that sends `head`, waits until `go` fires (or is dropped), then sends `rest`.
fn held_body(head: Bytes, rest: Bytes, go: tokio::sync::oneshot::Receiver<()>) -> ByteStream {
    stream::once(async move { Ok(head) })
        .chain(stream::once(async move {
            let _ = go.await;
            Ok(rest)
        }))
        .boxed()
}

/// Two replicas append to one session at the same offset at once (a client that did not
/// wait for its previous chunk): `slow` reads the state, `fast` appends and saves, then
/// `slow` saves over it. Both start at offset 0, so both keep a running hash. Whichever
/// digest is then presented, on whichever replica, a blob is committed only if its bytes
/// are what its digest says.
async fn racing_appends(b: &S3Backend, len: usize) {
    let id = Uuid::new_v4();
    let (slow, fast) = (b.instance(), b.instance());
    slow.upload_start(id).await.unwrap();
    let (mine, theirs) = (pattern(len, 21), pattern(len, 22));
    let (go, wait) = tokio::sync::oneshot::channel();
    let held = {
        let slow = slow.clone();
        let mine = mine.clone();
        tokio::spawn(async move {
            slow.upload_append(
                id,
                Some(0),
                held_body(mine.slice(..1), mine.slice(1..), wait),
            )
            .await
        })
    };
    // `slow` has read the state once its first byte is through.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fast_size = fast
        .upload_append(id, Some(0), pieces(theirs.clone(), 65_536))
        .await
        .unwrap();
    go.send(()).unwrap();
    let slow_size = held.await.unwrap().unwrap();
    assert_eq!(
        fast_size, slow_size,
        "both were acknowledged at the same size"
    );
    let (slow_bytes, fast_bytes) = (mine, theirs);
    // `fast`'s running hash is for a state that is no longer the session's: its digest
    // must be refused (the bytes are `slow`'s), however cheap trusting the hash would be.
    let r = fast
        .upload_finish(id, &Digest::sha256_of(&fast_bytes))
        .await;
    assert!(
        r.is_err(),
        "a blob was committed from another append's bytes: {r:?}"
    );
    assert_eq!(
        fast.stat(&Digest::sha256_of(&fast_bytes)).await.unwrap(),
        None
    );
    // The state that won is consistent: its own digest commits exactly its bytes, or (if
    // the storage saw its parts overwritten) nothing at all.
    let digest = Digest::sha256_of(&slow_bytes);
    match slow.upload_finish(id, &digest).await {
        Ok(size) => {
            assert_eq!(size, slow_bytes.len() as u64);
            assert_eq!(
                read_all(fast.read(&digest, None).await.unwrap()).await,
                slow_bytes
            );
        }
        Err(e) => assert_eq!(fast.stat(&digest).await.unwrap(), None, "{e}"),
    }
    for blob in slow.list().await.unwrap() {
        let bytes = read_all(slow.read(&blob.digest, None).await.unwrap()).await;
        assert_eq!(
            Digest::sha256_of(&bytes),
            blob.digest,
            "a blob's bytes are not its digest's"
        );
    }
}

async fn s3_racing_appends_in_one_part_never_commit_a_wrong_blob(b: &S3Backend) {
    racing_appends(b, 1000).await;
}

async fn s3_racing_appends_across_parts_never_commit_a_wrong_blob(b: &S3Backend) {
    racing_appends(b, PART + PART / 2).await;
}

/// A session above the store's CopyObject limit is committed by streaming it into the
/// blob's key (AWS refuses to copy more than 5 GiB at once; the limit is lowered here).
async fn s3_a_session_larger_than_one_copy_is_streamed_into_place(b: &S3Backend) {
    let s = S3BlobStore::new(S3Config {
        copy_limit: PART as u64,
        ..b.config.clone()
    })
    .unwrap();
    let data = pattern(2 * PART + 17, 23);
    let id = Uuid::new_v4();
    s.upload_start(id).await.unwrap();
    s.upload_append(id, None, pieces(data.clone(), 65_536))
        .await
        .unwrap();
    // Without the running hash (another replica), a wrong digest: nothing committed.
    let other = S3BlobStore::new(S3Config {
        copy_limit: PART as u64,
        ..b.config.clone()
    })
    .unwrap();
    let wrong = Digest::sha256_of(b"something else");
    assert!(matches!(
        other.upload_finish(id, &wrong).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert!(s.list().await.unwrap().is_empty());
    let digest = Digest::sha256_of(&data);
    assert_eq!(
        s.upload_finish(id, &digest).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(read_all(s.read(&digest, None).await.unwrap()).await, data);
    assert!(
        b.keys("_uploads").await.is_empty(),
        "session objects remain"
    );
    assert_eq!(b.temporaries().await, 0, "the streamed copy left a marker");
}

async fn s3_session_state_names_its_parts_and_tail(b: &S3Backend) {
    let s = b.instance();
    let id = Uuid::new_v4();
    s.upload_start(id).await.unwrap();
    let data = pattern(3 * PART + 5, 6);
    s.upload_append(id, None, pieces(data.clone(), 1 << 20))
        .await
        .unwrap();
    let st = b.state(id).await;
    assert_eq!(st["size"], data.len() as u64);
    assert_eq!(st["parts"].as_array().unwrap().len(), 3);
    assert!(st["multipart"].is_string());
    let tail = format!(
        "{}/_uploads/{id}/tail.{}.{}",
        b.raw.prefix,
        st["tail"],
        st["version"].as_str().unwrap()
    );
    assert_eq!(b.object(&tail).await, data.slice(3 * PART..));
    s.upload_finish(id, &Digest::sha256_of(&data))
        .await
        .unwrap();
    assert!(
        b.keys("_uploads").await.is_empty(),
        "session objects remain"
    );
}

async fn s3_a_failed_chunk_across_a_part_boundary_leaves_the_state_untouched(b: &S3Backend) {
    let id = Uuid::new_v4();
    let data = pattern(2 * PART + 77, 7);
    let s = b.instance();
    s.upload_start(id).await.unwrap();
    s.upload_append(id, None, pieces(data.slice(..PART / 2), 65_536))
        .await
        .unwrap();
    let before = b.state(id).await;
    // Crosses into a second part, then the client goes away.
    let r = s
        .upload_append(id, None, broken_after(pattern(PART + PART / 2, 99)))
        .await;
    assert!(matches!(r, Err(BlobError::Body(_))), "{r:?}");
    let after = b.state(id).await;
    assert_eq!(before["size"], after["size"]);
    assert_eq!(before["parts"], after["parts"]);
    assert_eq!(before["tail"], after["tail"]);
    assert!(matches!(
        b.instance()
            .upload_append(id, Some(1), body(&[b"x"]))
            .await,
        Err(BlobError::OffsetMismatch { current }) if current == (PART / 2) as u64
    ));
    // The rest, from another replica: the stray part of the failed chunk is replaced.
    let size = b
        .instance()
        .upload_append(
            id,
            Some((PART / 2) as u64),
            pieces(data.slice(PART / 2..), 65_536),
        )
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    b.instance()
        .upload_finish(id, &Digest::sha256_of(&data))
        .await
        .unwrap();
    assert_eq!(
        read_all(s.read(&Digest::sha256_of(&data), None).await.unwrap()).await,
        data
    );
}

async fn s3_a_restart_mid_upload_loses_nothing(b: &S3Backend) {
    let id = Uuid::new_v4();
    let data = pattern(2 * PART + PART / 3, 8);
    {
        let first = b.instance();
        first.upload_start(id).await.unwrap();
        first
            .upload_append(id, None, pieces(data.slice(..PART + 1), 65_536))
            .await
            .unwrap();
    } // the process goes away, with its running hash
    let restarted = b.instance();
    assert_eq!(
        restarted.upload_info(id).await.unwrap().size,
        PART as u64 + 1
    );
    restarted
        .upload_append(
            id,
            Some(PART as u64 + 1),
            pieces(data.slice(PART + 1..), 65_536),
        )
        .await
        .unwrap();
    let digest = Digest::sha256_of(&data);
    restarted.upload_finish(id, &digest).await.unwrap();
    assert_eq!(
        read_all(restarted.read(&digest, None).await.unwrap()).await,
        data
    );
}

async fn s3_a_digest_mismatch_after_assembly_commits_nothing(b: &S3Backend) {
    let id = Uuid::new_v4();
    let data = pattern(PART + 1000, 9);
    let s = b.instance();
    s.upload_start(id).await.unwrap();
    s.upload_append(id, None, pieces(data.clone(), 65_536))
        .await
        .unwrap();
    // With the running hash: refused before anything is assembled.
    let wrong = Digest::sha256_of(b"not it");
    assert!(matches!(
        s.upload_finish(id, &wrong).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    let st = b.state(id).await;
    assert!(st["multipart"].is_string(), "{st}");
    // Without it (another replica): assembled, streamed back, refused.
    assert!(matches!(
        b.instance().upload_finish(id, &wrong).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert!(s.list().await.unwrap().is_empty());
    assert_eq!(s.stat(&wrong).await.unwrap(), None);
    assert_eq!(b.state(id).await["assembled"], true);
    // The right digest still commits it.
    let digest = Digest::sha256_of(&data);
    b.instance().upload_finish(id, &digest).await.unwrap();
    assert_eq!(read_all(s.read(&digest, None).await.unwrap()).await, data);
    assert!(b.keys("_uploads").await.is_empty());
}

async fn s3_redirect_urls_serve_the_blob_and_its_ranges(b: &S3Backend) {
    let s = b.instance();
    let data = pattern(100_000, 10);
    let digest = Digest::sha256_of(&data);
    s.put(&digest, pieces(data.clone(), 10_000)).await.unwrap();
    let url = s
        .redirect(&digest, Duration::from_secs(600))
        .await
        .unwrap()
        .expect("S3 hands out URLs");
    let client = reqwest::Client::new();
    let full = client.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.bytes().await.unwrap(), data);
    let part = client
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), data.slice(10..20));
}

async fn s3_credentials_come_from_a_file(b: &S3Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (id, secret) = (&b.config.access_key_id, &b.config.secret_access_key);
    let aws = dir.path().join("credentials");
    std::fs::write(
        &aws,
        format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    let from_aws_file = S3Config {
        access_key_id: String::new(),
        secret_access_key: String::new(),
        credentials_file: Some(aws),
        ..b.config.clone()
    };
    S3BlobStore::open(from_aws_file).await.unwrap();
    // A mounted Kubernetes Secret: the file is the secret, the key id is configured.
    let mounted = dir.path().join("secret-access-key");
    std::fs::write(&mounted, format!("{secret}\n")).unwrap();
    let from_secret_file = S3Config {
        secret_access_key: String::new(),
        credentials_file: Some(mounted.clone()),
        ..b.config.clone()
    };
    let s = S3BlobStore::open(from_secret_file.clone()).await.unwrap();
    let d = Digest::sha256_of(b"signed with the file's secret");
    s.put(&d, body(&[b"signed with the file's secret"]))
        .await
        .unwrap();
    // A wrong secret is refused at open, and is not mistaken for an outage.
    std::fs::write(&mounted, "not-the-secret").unwrap();
    let e = S3BlobStore::open(from_secret_file).await.unwrap_err();
    assert!(matches!(e, BlobError::Io(_)), "{e:?}");
}

/// A TCP relay to the S3 server that can be cut (the storage goes away) and restored.
struct Relay {
    port: u16,
    target: String,
    accept: Option<tokio::task::JoinHandle<()>>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let mut r = Relay {
            port: 0,
            target,
            accept: None,
            conns: Arc::default(),
        };
        r.up().await;
        r
    }

    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.port = listener.local_addr().unwrap().port();
        let (target, conns) = (self.target.clone(), self.conns.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                conns.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        }));
    }

    fn down(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// S3 goes away after the chunk's first part was stored and before its second: the
/// append fails as unavailable, and the session is still what it was before it.
async fn s3_storage_failing_mid_chunk_leaves_the_upload_as_it_was(b: &S3Backend) {
    let target = b.config.endpoint.trim_start_matches("http://").to_string();
    let relay = Arc::new(tokio::sync::Mutex::new(Relay::start(target).await));
    let via = S3Config {
        endpoint: format!("http://127.0.0.1:{}", relay.lock().await.port),
        max_retries: 1,
        ..b.config.clone()
    };
    let s = S3BlobStore::new(via).unwrap();
    let data = pattern(3 * PART, 11);
    let id = Uuid::new_v4();
    s.upload_start(id).await.unwrap();
    s.upload_append(id, None, pieces(data.slice(..PART / 2), 65_536))
        .await
        .unwrap();
    let before = b.state(id).await;

    let chunks = vec![
        data.slice(PART / 2..PART / 2 + PART),
        data.slice(PART / 2 + PART..),
    ];
    let cut = relay.clone();
    let body = stream::iter(chunks.into_iter().enumerate())
        .then(move |(i, c)| {
            let cut = cut.clone();
            async move {
                if i == 1 {
                    cut.lock().await.down();
                }
                Ok(c)
            }
        })
        .boxed();
    let r = s.upload_append(id, Some((PART / 2) as u64), body).await;
    assert!(matches!(r, Err(BlobError::Unavailable(_))), "{r:?}");
    relay.lock().await.up().await;

    let after = b.state(id).await;
    assert_eq!(before["size"], after["size"]);
    assert_eq!(before["parts"], after["parts"]);
    assert_eq!(before["tail"], after["tail"]);
    // The failed call got as far as S3: it opened the multipart upload (recorded, so
    // it can be aborted) and stored its first part, which the state does not name.
    assert!(before["multipart"].is_null() && after["multipart"].is_string());
    assert_eq!(s.upload_info(id).await.unwrap().size, (PART / 2) as u64);
    // The same chunk again, now that S3 is back, and the upload completes.
    s.upload_append(
        id,
        Some((PART / 2) as u64),
        pieces(data.slice(PART / 2..), 65_536),
    )
    .await
    .unwrap();
    let digest = Digest::sha256_of(&data);
    b.instance().upload_finish(id, &digest).await.unwrap();
    assert_eq!(read_all(s.read(&digest, None).await.unwrap()).await, data);
    relay.lock().await.down();
}

fn unreachable_config(endpoint: String) -> S3Config {
    S3Config {
        endpoint,
        region: "garage".into(),
        bucket: "nowhere".into(),
        access_key_id: "GK0000".into(),
        secret_access_key: "secret".into(),
        max_retries: 1,
        ..S3Config::default()
    }
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn an_unreachable_endpoint_is_unavailable() {
    let cfg = unreachable_config(format!("http://127.0.0.1:{}", closed_port()));
    let e = S3BlobStore::open(cfg.clone()).await.unwrap_err();
    assert!(matches!(e, BlobError::Unavailable(_)), "{e:?}");
    let s = S3BlobStore::new(cfg).unwrap();
    let d = Digest::sha256_of(b"x");
    assert!(matches!(s.stat(&d).await, Err(BlobError::Unavailable(_))));
    assert!(matches!(
        s.read(&d, None).await,
        Err(BlobError::Unavailable(_))
    ));
    assert!(matches!(
        s.put(&d, body(&[b"x"])).await,
        Err(BlobError::Unavailable(_))
    ));
    let id = Uuid::new_v4();
    assert!(matches!(
        s.upload_start(id).await,
        Err(BlobError::Unavailable(_))
    ));
    assert!(matches!(
        s.upload_append(id, None, body(&[b"x"])).await,
        Err(BlobError::Unavailable(_))
    ));
}

/// A server that answers every request with 503.
async fn server_errors_are_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 65_536];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let s = S3BlobStore::new(unreachable_config(format!("http://127.0.0.1:{port}"))).unwrap();
    let d = Digest::sha256_of(b"x");
    let e = s.stat(&d).await.unwrap_err();
    assert!(matches!(e, BlobError::Unavailable(_)), "{e:?}");
    let e = s.upload_info(Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(e, BlobError::Unavailable(_)), "{e:?}");
    server.abort();
}
