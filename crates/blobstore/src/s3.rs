//! The S3 blob store: blobs in S3-compatible object storage, shared by several replicas.
//!
//! Layout under the bucket's key prefix:
//! - `blobs/<alg>/<first two hex>/<hex>`: committed blobs, immutable;
//! - `_uploads/<uuid>/state.json`: an upload session (its multipart upload id, the ETags
//!   of its full parts, its size, a random version), `_uploads/<uuid>/tail.<n>.<version>`:
//!   the bytes after the last full part, `_uploads/<uuid>/data.<tag>`: what the multipart
//!   upload completes into (one tag per multipart upload);
//! - `_tmp/<uuid>.json`: the multipart upload of a monolithic put in flight (refreshed as
//!   it progresses, so a stale one is a crashed put's);
//! - `_quarantine/<alg>-<hex>.<unix time>`: blobs fsck took out of service.
//!
//! Every replica may receive any request of a session, and a replica may restart between
//! two of them, so everything a session needs is in the bucket; the only thing kept in
//! memory is the running hash, an optimisation: a replica that finishes an upload without
//! it streams the assembled bytes back and hashes them. A session's state is rewritten
//! only after the bytes it names are stored, so a failed chunk leaves the session as it
//! was (parts it uploaded are overwritten by the next attempt, or left out when the
//! multipart upload completes). At most one part is buffered per request.
//!
//! Two requests appending to one session at once on different replicas are not
//! serialised (S3 has no compare-and-swap that every S3-compatible server offers): the
//! last to rewrite `state.json` wins and the other's bytes are lost, which the client's
//! final digest then reports. What they can never do is commit a blob whose bytes differ
//! from its digest: each state names objects only its own writer made (the tail and the
//! data key carry the version or multipart tag), S3 refuses to complete a multipart upload
//! whose parts' ETags are not the ones the state lists, and a running hash is trusted only
//! for the version it was computed for, and only when this replica completed the upload
//! itself.
//!
//! A blob's key is written only after its digest was checked: a monolithic put streams
//! into a multipart upload of the blob's own key and completes it once the hash matched
//! (S3 shows nothing until completion); a session completes into its `data` key, is
//! verified, and is copied to the blob's key. Failures to reach the storage (connection
//! errors, timeouts, 5xx after retries) are [`BlobError::Unavailable`].

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, PutPayload, RetryConfig,
};
use oci::{Algorithm, Digest, DigestHasher};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{BlobError, BlobInfo, BlobStore, ByteStream, Result, UploadInfo};

/// S3 refuses parts smaller than this (except the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// AWS S3's limit on one CopyObject.
pub const MAX_COPY_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// A download that delivers nothing for this long is abandoned (the request as a whole
/// has no deadline: a multi-GiB layer to a slow client takes what it takes).
const READ_IDLE: Duration = Duration::from_secs(60);
/// A monolithic put's marker is rewritten at most this often.
const MARKER_REFRESH: Duration = Duration::from_secs(60);

/// Where the store is and how to sign in.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// e.g. `https://s3.eu-central-1.amazonaws.com` or `http://127.0.0.1:3900`; empty:
    /// AWS for `region`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Keys start with `<prefix>/` (empty: at the bucket's root).
    pub prefix: String,
    /// Empty: from `credentials_file`, else `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// Empty: from `credentials_file`, else `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// An AWS-style credentials file (`[default]`, `aws_access_key_id = …`), or a file
    /// holding only the secret access key (a mounted Kubernetes Secret).
    pub credentials_file: Option<PathBuf>,
    /// `https://<bucket>.<endpoint host>/<key>` instead of `https://<endpoint>/<bucket>/<key>`.
    pub virtual_hosted_style: bool,
    /// Plain-HTTP endpoints are accepted only with this, or on a loopback address.
    pub allow_http: bool,
    /// Size of each multipart part but the last (at least [`MIN_PART_SIZE`]).
    pub part_size: usize,
    /// How often a failed request is retried (with exponential backoff) before the
    /// storage counts as unavailable.
    pub max_retries: usize,
    /// The largest upload committed with one server-side CopyObject (AWS allows 5 GiB);
    /// a larger one is streamed from the session's object into the blob's key.
    pub copy_limit: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: String::new(),
            bucket: String::new(),
            prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            credentials_file: None,
            virtual_hosted_style: false,
            allow_http: false,
            part_size: DEFAULT_PART_SIZE,
            max_retries: 3,
            copy_limit: MAX_COPY_SIZE,
        }
    }
}

/// What an upload session is, as stored in `state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct SessionState {
    /// Bytes received so far.
    size: u64,
    /// Every part but the last of the multipart upload has this size.
    part_size: u64,
    /// The S3 multipart upload into `data`, created when the first part fills.
    multipart: Option<String>,
    /// ETags of the uploaded full parts, in order.
    parts: Vec<String>,
    /// Generation of the `tail.<n>` object holding the bytes after the full parts.
    tail: Option<u64>,
    /// The multipart upload was completed into `data` (a digest did not match after it).
    assembled: bool,
    /// Random, new with every write that changes what the session holds: names the tail,
    /// and is what a running hash is valid for. Nil in states of older Berths.
    #[serde(default)]
    version: Uuid,
    /// Names the multipart upload's target, `data.<tag>`; `None` (older Berths): `data`.
    #[serde(default)]
    data: Option<Uuid>,
}

/// The marker of a monolithic put's multipart upload.
#[derive(Debug, Serialize, Deserialize)]
struct PutMarker {
    key: String,
    multipart: String,
}

/// The running hash of a session, valid for the state of that version.
#[derive(Default)]
struct Local {
    hashed: Option<(Uuid, DigestHasher)>,
}

pub struct S3BlobStore {
    /// Requests with a bounded duration (everything but downloads).
    pub(crate) ctl: Arc<AmazonS3>,
    /// Downloads, with no overall deadline (see [`READ_IDLE`]).
    data: Arc<AmazonS3>,
    pub(crate) prefix: String,
    part_size: usize,
    copy_limit: u64,
    describe: String,
    sessions: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<Local>>>>,
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl S3BlobStore {
    /// Builds the store and checks that the bucket answers.
    pub async fn open(config: S3Config) -> Result<Self> {
        let store = Self::new(config)?;
        store.check().await?;
        Ok(store)
    }

    /// Builds the store without contacting it.
    pub fn new(config: S3Config) -> Result<Self> {
        let invalid = |m: String| BlobError::Io(io::Error::new(io::ErrorKind::InvalidInput, m));
        if config.bucket.is_empty() {
            return Err(invalid("the S3 bucket is not set".into()));
        }
        if config.part_size < MIN_PART_SIZE {
            return Err(invalid(format!(
                "the S3 part size must be at least {MIN_PART_SIZE} bytes"
            )));
        }
        let prefix = config.prefix.trim_matches('/').to_string();
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            return Err(invalid(format!(
                "the S3 key prefix {prefix:?} may only hold letters, digits and -_./"
            )));
        }
        let (key_id, secret) = credentials(&config).map_err(BlobError::Io)?;
        let mut endpoint = config.endpoint.trim_end_matches('/').to_string();
        if !endpoint.is_empty() {
            let Some((scheme, host)) = endpoint.split_once("://") else {
                return Err(invalid(format!(
                    "the S3 endpoint {endpoint:?} must start with https:// or http://"
                )));
            };
            if scheme == "http" && !config.allow_http && !is_loopback(host) {
                return Err(invalid(format!(
                    "the S3 endpoint {endpoint} is plain HTTP; use https:// or allow_http"
                )));
            }
            if config.virtual_hosted_style {
                endpoint = format!("{scheme}://{}.{host}", config.bucket);
            }
        }
        let build = |options: ClientOptions| -> Result<AmazonS3> {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&config.bucket)
                .with_virtual_hosted_style_request(config.virtual_hosted_style)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_retry(RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(5),
                        base: 2.0,
                    },
                    max_retries: config.max_retries,
                    retry_timeout: Duration::from_secs(60),
                })
                .with_client_options(options.with_allow_http(endpoint.starts_with("http://")));
            if !config.region.is_empty() {
                b = b.with_region(&config.region);
            }
            if !endpoint.is_empty() {
                b = b.with_endpoint(&endpoint);
            }
            if let Some(k) = &key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(s) = &secret {
                b = b.with_secret_access_key(s);
            }
            b.build()
                .map_err(|e| invalid(format!("S3 configuration: {e}")))
        };
        let base = ClientOptions::new().with_connect_timeout(Duration::from_secs(5));
        let ctl = build(base.clone().with_timeout(Duration::from_secs(300)))?;
        let data = build(base.with_timeout_disabled())?;
        let describe = format!(
            "s3 bucket {:?} at {}{}",
            config.bucket,
            if endpoint.is_empty() {
                "AWS"
            } else {
                &endpoint
            },
            if prefix.is_empty() {
                String::new()
            } else {
                format!(", prefix {prefix:?}")
            }
        );
        Ok(S3BlobStore {
            ctl: Arc::new(ctl),
            data: Arc::new(data),
            prefix,
            part_size: config.part_size,
            copy_limit: config.copy_limit,
            describe,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Lists the prefix once: fails if the bucket is missing, unreachable or refuses
    /// the credentials.
    pub async fn check(&self) -> Result<()> {
        self.ctl
            .list_with_delimiter(Some(&self.key("")))
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    fn key(&self, rest: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn blob_key(&self, d: &Digest) -> Path {
        // The digest is validated: algorithm is a known name, hex is [0-9a-f]{64|128}.
        self.key(&format!(
            "blobs/{}/{}/{}",
            d.algorithm().as_str(),
            &d.hex()[..2],
            d.hex()
        ))
    }

    fn session_key(&self, id: Uuid, name: &str) -> Path {
        self.key(&format!("_uploads/{id}/{name}"))
    }

    fn state_key(&self, id: Uuid) -> Path {
        self.session_key(id, "state.json")
    }

    /// The tail object of a state, if it has one.
    fn tail_key(&self, id: Uuid, st: &SessionState) -> Option<Path> {
        let g = st.tail?;
        Some(if st.version.is_nil() {
            self.session_key(id, &format!("tail.{g}"))
        } else {
            self.session_key(id, &format!("tail.{g}.{}", st.version))
        })
    }

    fn data_key(&self, id: Uuid, st: &SessionState) -> Path {
        match st.data {
            Some(tag) => self.session_key(id, &format!("data.{tag}")),
            None => self.session_key(id, "data"),
        }
    }

    /// The key relative to the prefix.
    fn relative<'a>(&self, p: &'a Path) -> &'a str {
        let s = p.as_ref();
        if self.prefix.is_empty() {
            s
        } else {
            s.strip_prefix(&self.prefix)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(s)
        }
    }

    fn session(&self, id: Uuid) -> Arc<tokio::sync::Mutex<Local>> {
        self.sessions.lock().unwrap().entry(id).or_default().clone()
    }

    fn forget(&self, id: Uuid) {
        self.sessions.lock().unwrap().remove(&id);
    }

    async fn load_state(&self, id: Uuid) -> Result<(SessionState, SystemTime)> {
        let r = match self.ctl.get(&self.state_key(id)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::UploadUnknown),
            Err(e) => return Err(s3_error(e)),
        };
        let modified = SystemTime::from(r.meta.last_modified);
        let bytes = r.bytes().await.map_err(s3_error)?;
        let state = serde_json::from_slice(&bytes)
            .map_err(|e| BlobError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        Ok((state, modified))
    }

    async fn save_state(&self, id: Uuid, state: &SessionState) -> Result<()> {
        let json = serde_json::to_vec(state).expect("state serialises");
        self.ctl
            .put(&self.state_key(id), PutPayload::from(json))
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn get_all(&self, key: &Path) -> Result<Bytes> {
        self.ctl
            .get(key)
            .await
            .map_err(s3_error)?
            .bytes()
            .await
            .map_err(s3_error)
    }

    /// Streams an object back and hashes it.
    async fn hash_object(&self, key: &Path, algorithm: Algorithm) -> Result<Digest> {
        let stream = self.data.get(key).await.map_err(s3_error)?.into_stream();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut h = DigestHasher::new(algorithm);
            while let Some(chunk) = rx.blocking_recv() {
                h.update(&chunk);
            }
            h.finish()
        });
        let mut stream = idle_timeout(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(s3_error)?;
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
        drop(tx);
        hasher.await.map_err(|e| BlobError::Io(io::Error::other(e)))
    }

    async fn delete_quietly(&self, key: &Path) {
        if let Err(e) = self.ctl.delete(key).await {
            if !matches!(e, object_store::Error::NotFound { .. }) {
                tracing::warn!(key = %key, error = %e, "could not delete a temporary object");
            }
        }
    }

    /// Deletes everything under `_uploads/<id>/`.
    async fn delete_session_objects(&self, id: Uuid) -> Result<()> {
        let dir = self.key(&format!("_uploads/{id}"));
        let keys: Vec<Path> = self
            .ctl
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(s3_error)?;
        for k in keys {
            self.delete_quietly(&k).await;
        }
        Ok(())
    }

    /// The session's bytes as one object: completes its multipart upload (with the tail
    /// as the last part), or names the tail when there is no full part. `None`: empty.
    /// The flag says whether the object is exactly what `st` named (this call completed
    /// the upload, or there was none to complete); when not, a running hash of `st`'s
    /// bytes says nothing about it.
    async fn assemble(&self, id: Uuid, st: &mut SessionState) -> Result<(Option<Path>, bool)> {
        let data = self.data_key(id, st);
        if st.assembled {
            return Ok((Some(data), false));
        }
        let Some(mp) = st.multipart.clone() else {
            return Ok((self.tail_key(id, st), true));
        };
        let mut parts: Vec<object_store::multipart::PartId> = st
            .parts
            .iter()
            .map(|e| object_store::multipart::PartId {
                content_id: e.clone(),
            })
            .collect();
        let tail_key = self.tail_key(id, st);
        let completed = async {
            if let Some(key) = &tail_key {
                let tail = self.get_all(key).await?;
                let part = self
                    .ctl
                    .put_part(&data, &mp, parts.len(), PutPayload::from(tail))
                    .await
                    .map_err(s3_error)?;
                parts.push(part);
            }
            self.ctl
                .complete_multipart(&data, &mp, parts)
                .await
                .map_err(s3_error)
        }
        .await;
        let exact = match completed {
            Ok(_) => true,
            Err(e) => {
                // A previous attempt may have completed it and died before saying so (or
                // another replica finished it meanwhile): its bytes are re-hashed.
                match self.ctl.head(&data).await {
                    Ok(m) if m.size == st.size => false,
                    _ => return Err(e),
                }
            }
        };
        st.assembled = true;
        st.multipart = None;
        st.tail = None;
        st.version = Uuid::new_v4();
        self.save_state(id, st).await?;
        if let Some(key) = tail_key {
            self.delete_quietly(&key).await;
        }
        Ok((Some(data), exact))
    }

    async fn put_marker(&self, marker: &Path, m: &PutMarker) -> Result<()> {
        let json = serde_json::to_vec(m).expect("marker serialises");
        self.ctl
            .put(marker, PutPayload::from(json))
            .await
            .map_err(s3_error)?;
        Ok(())
    }
}

/// `(access key id, secret)` from the configuration or its credentials file; `None`
/// leaves it to the environment (`AWS_ACCESS_KEY_ID`, …).
fn credentials(c: &S3Config) -> io::Result<(Option<String>, Option<String>)> {
    let mut key_id = Some(c.access_key_id.clone()).filter(|s| !s.is_empty());
    let mut secret = Some(c.secret_access_key.clone()).filter(|s| !s.is_empty());
    if let Some(path) = &c.credentials_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("reading S3 credentials file {}: {e}", path.display()),
            )
        })?;
        let (file_id, file_secret) = parse_credentials_file(&text);
        key_id = key_id.or(file_id);
        secret = secret.or(file_secret);
    }
    Ok((key_id, secret))
}

/// An AWS credentials file's `[default]` profile (or the only one), or, when the file
/// has no `key = value` line, the whole file as the secret access key.
pub fn parse_credentials_file(text: &str) -> (Option<String>, Option<String>) {
    if !text.contains('=') {
        let secret = text.trim();
        return (None, Some(secret.to_string()).filter(|s| !s.is_empty()));
    }
    let (mut id, mut secret) = (None, None);
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if !(section.is_empty() || section == "default") {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                _ => {}
            }
        }
    }
    (id, secret)
}

fn is_loopback(host_and_path: &str) -> bool {
    let authority = host_and_path.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Classifies a storage error: could not reach the store (or it failed on its side) is
/// [`BlobError::Unavailable`], anything else an I/O error.
fn s3_error(e: object_store::Error) -> BlobError {
    if is_unavailable(&e) {
        BlobError::Unavailable(e.to_string())
    } else {
        BlobError::Io(io::Error::from(e))
    }
}

fn is_unavailable(e: &object_store::Error) -> bool {
    if !matches!(e, object_store::Error::Generic { .. }) {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<reqwest::Error>().is_some() {
            return true; // connect, timeout, connection reset, body cut short
        }
        let text = s.to_string();
        // object_store's wording for an HTTP status it gave up retrying on.
        if let Some(rest) = text.split("status code: ").nth(1) {
            if rest.starts_with('5') || rest.starts_with("429") {
                return true;
            }
        }
        source = s.source();
    }
    false
}

fn not_found_as(e: object_store::Error, instead: BlobError) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => instead,
        e => s3_error(e),
    }
}

/// Ends a download that stalls for [`READ_IDLE`].
fn idle_timeout(
    s: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
) -> futures_util::stream::BoxStream<'static, object_store::Result<Bytes>> {
    futures_util::stream::unfold(Some(s), |s| async move {
        let mut s = s?;
        match tokio::time::timeout(READ_IDLE, s.next()).await {
            Ok(Some(item)) => Some((item, Some(s))),
            Ok(None) => None,
            Err(_) => Some((
                Err(object_store::Error::Generic {
                    store: "S3",
                    source: "no data for 60s while reading an object".into(),
                }),
                None,
            )),
        }
    })
    .boxed()
}

fn mismatch(expected: &Digest, actual: Digest) -> BlobError {
    BlobError::DigestMismatch {
        expected: expected.clone(),
        actual,
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.ctl.head(&self.blob_key(digest)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn read(&self, digest: &Digest, range: Option<(u64, u64)>) -> Result<ByteStream> {
        let options = GetOptions {
            range: range.map(|(first, last)| GetRange::Bounded(first..last + 1)),
            ..GetOptions::default()
        };
        let r = self
            .data
            .get_opts(&self.blob_key(digest), options)
            .await
            .map_err(|e| not_found_as(e, BlobError::NotFound))?;
        Ok(idle_timeout(r.into_stream())
            .map(|c| c.map_err(io::Error::from))
            .boxed())
    }

    async fn put(&self, expected: &Digest, mut body: ByteStream) -> Result<u64> {
        let key = self.blob_key(expected);
        let ps = self.part_size;
        let mut hasher = DigestHasher::new(expected.algorithm());
        let mut buf = BytesMut::new();
        let mut written = 0u64;
        // (multipart id, its marker, parts so far, marker last written)
        let mut mp: Option<(
            String,
            Path,
            Vec<object_store::multipart::PartId>,
            std::time::Instant,
        )> = None;
        let result: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let mut chunk = chunk.map_err(BlobError::Body)?;
                hasher.update(&chunk);
                written += chunk.len() as u64;
                while !chunk.is_empty() {
                    let take = (ps - buf.len()).min(chunk.len());
                    buf.extend_from_slice(&chunk.split_to(take));
                    if buf.len() < ps {
                        continue;
                    }
                    let part = PutPayload::from(buf.split().freeze());
                    if mp.is_none() {
                        let id = self.ctl.create_multipart(&key).await.map_err(s3_error)?;
                        let marker = self.key(&format!("_tmp/{}.json", Uuid::new_v4()));
                        let m = PutMarker {
                            key: key.to_string(),
                            multipart: id.clone(),
                        };
                        mp = Some((id, marker.clone(), Vec::new(), std::time::Instant::now()));
                        self.put_marker(&marker, &m).await?;
                    }
                    let (id, marker, parts, refreshed) = mp.as_mut().expect("created above");
                    let p = self
                        .ctl
                        .put_part(&key, id, parts.len(), part)
                        .await
                        .map_err(s3_error)?;
                    parts.push(p);
                    if refreshed.elapsed() > MARKER_REFRESH {
                        let m = PutMarker {
                            key: key.to_string(),
                            multipart: id.clone(),
                        };
                        self.put_marker(marker, &m).await?;
                        *refreshed = std::time::Instant::now();
                    }
                }
            }
            let actual = hasher.clone().finish();
            if &actual != expected {
                return Err(mismatch(expected, actual));
            }
            match &mut mp {
                None => {
                    // Small: one PUT, of bytes already verified.
                    self.ctl
                        .put(&key, PutPayload::from(buf.split().freeze()))
                        .await
                        .map_err(s3_error)?;
                }
                Some((id, _, parts, _)) => {
                    if !buf.is_empty() {
                        let p = self
                            .ctl
                            .put_part(
                                &key,
                                id,
                                parts.len(),
                                PutPayload::from(buf.split().freeze()),
                            )
                            .await
                            .map_err(s3_error)?;
                        parts.push(p);
                    }
                    self.ctl
                        .complete_multipart(&key, id, std::mem::take(parts))
                        .await
                        .map_err(s3_error)?;
                }
            }
            Ok(())
        }
        .await;
        if let Some((id, marker, _, _)) = &mp {
            if result.is_err() {
                if let Err(e) = self.ctl.abort_multipart(&key, id).await {
                    // The marker stays: clean_temporary aborts it later.
                    tracing::warn!(error = %e, "could not abort a failed put's multipart upload");
                    return result.map(|_| written);
                }
            }
            self.delete_quietly(marker).await;
        }
        result.map(|_| written)
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        let key = self.blob_key(digest);
        if self.stat(digest).await?.is_none() {
            return Ok(false);
        }
        match self.ctl.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn quarantine(&self, digest: &Digest) -> Result<bool> {
        let key = self.blob_key(digest);
        if self.stat(digest).await?.is_none() {
            return Ok(false);
        }
        let stamp = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let to = self.key(&format!(
            "_quarantine/{}-{}.{stamp}",
            digest.algorithm().as_str(),
            digest.hex()
        ));
        match self.ctl.copy(&key, &to).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(s3_error(e)),
        }
        self.ctl.delete(&key).await.map_err(s3_error)?;
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<BlobInfo>> {
        let metas: Vec<object_store::ObjectMeta> = self
            .ctl
            .list(Some(&self.key("blobs")))
            .try_collect()
            .await
            .map_err(s3_error)?;
        let mut out = Vec::new();
        for m in metas {
            let rel = self.relative(&m.location);
            let mut it = rel.split('/');
            let (Some("blobs"), Some(alg), Some(pre), Some(hex), None) =
                (it.next(), it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            // Anything that is not a well-formed digest in its place is not a blob.
            match format!("{alg}:{hex}").parse::<Digest>() {
                Ok(digest) if hex.starts_with(pre) && pre.len() == 2 => out.push(BlobInfo {
                    digest,
                    size: m.size,
                    modified: SystemTime::from(m.last_modified),
                }),
                _ => {}
            }
        }
        Ok(out)
    }

    async fn upload_start(&self, id: Uuid) -> Result<()> {
        let state = SessionState {
            part_size: self.part_size as u64,
            version: Uuid::new_v4(),
            ..SessionState::default()
        };
        self.save_state(id, &state).await
    }

    async fn upload_info(&self, id: Uuid) -> Result<UploadInfo> {
        let (st, modified) = self.load_state(id).await?;
        Ok(UploadInfo {
            id,
            size: st.size,
            modified,
        })
    }

    async fn upload_append(
        &self,
        id: Uuid,
        start: Option<u64>,
        mut body: ByteStream,
    ) -> Result<u64> {
        let session = self.session(id);
        let mut local = session.lock().await;
        let (st, _) = self.load_state(id).await?;
        if let Some(start) = start {
            if start != st.size {
                return Err(BlobError::OffsetMismatch { current: st.size });
            }
        }
        let cached = local
            .hashed
            .take()
            .filter(|(version, _)| *version == st.version && !version.is_nil())
            .map(|(_, h)| h)
            // Nothing received yet: the running hash starts here, on whichever replica.
            .or_else(|| (st.size == 0).then(|| DigestHasher::new(Algorithm::Sha256)));
        let mut hasher = cached.clone();
        if st.assembled {
            local.hashed = cached.map(|h| (st.version, h));
            return Err(BlobError::Io(io::Error::other(
                "this upload session was already completed once (its digest did not match); \
                 start a new one",
            )));
        }
        let ps = st.part_size as usize;
        let mut new = st.clone();
        new.version = Uuid::new_v4();
        let mut new_tail = None;
        let mut changed = false;
        let result: Result<()> = async {
            let mut buf = BytesMut::new();
            while let Some(chunk) = body.next().await {
                let mut chunk = chunk.map_err(BlobError::Body)?;
                if !changed && !chunk.is_empty() {
                    // The tail so far continues with this chunk.
                    if let Some(key) = self.tail_key(id, &st) {
                        buf.extend_from_slice(&self.get_all(&key).await?);
                    }
                    changed = true;
                }
                if let Some(h) = &mut hasher {
                    h.update(&chunk);
                }
                new.size += chunk.len() as u64;
                while !chunk.is_empty() {
                    let take = (ps - buf.len()).min(chunk.len());
                    buf.extend_from_slice(&chunk.split_to(take));
                    if buf.len() < ps {
                        continue;
                    }
                    if new.multipart.is_none() {
                        new.data = Some(Uuid::new_v4());
                        let data = self.data_key(id, &new);
                        let mp = self.ctl.create_multipart(&data).await.map_err(s3_error)?;
                        // Recorded at once, so that it can be aborted whatever happens
                        // next; the session's content (and so its version) is unchanged.
                        let with_mp = SessionState {
                            multipart: Some(mp.clone()),
                            data: new.data,
                            ..st.clone()
                        };
                        self.save_state(id, &with_mp).await?;
                        new.multipart = Some(mp);
                    }
                    let mp = new.multipart.as_ref().expect("created above");
                    let part = self
                        .ctl
                        .put_part(
                            &self.data_key(id, &new),
                            mp,
                            new.parts.len(),
                            PutPayload::from(buf.split().freeze()),
                        )
                        .await
                        .map_err(s3_error)?;
                    new.parts.push(part.content_id);
                }
            }
            if !changed {
                return Ok(()); // nothing received: nothing changes
            }
            new.tail = (!buf.is_empty()).then(|| st.tail.map_or(1, |g| g + 1));
            if let Some(key) = self.tail_key(id, &new) {
                self.ctl
                    .put(&key, PutPayload::from(buf.freeze()))
                    .await
                    .map_err(s3_error)?;
                new_tail = Some(key);
            }
            self.save_state(id, &new).await
        }
        .await;
        match result {
            Ok(()) if changed => {
                if let Some(old) = self.tail_key(id, &st) {
                    self.delete_quietly(&old).await;
                }
                local.hashed = hasher.map(|h| (new.version, h));
                Ok(new.size)
            }
            Ok(()) => {
                local.hashed = cached.map(|h| (st.version, h));
                Ok(st.size)
            }
            Err(e) => {
                if let Some(key) = new_tail {
                    self.delete_quietly(&key).await;
                }
                local.hashed = cached.map(|h| (st.version, h));
                Err(e)
            }
        }
    }

    async fn upload_finish(&self, id: Uuid, digest: &Digest) -> Result<u64> {
        let session = self.session(id);
        let mut local = session.lock().await;
        let (mut st, _) = self.load_state(id).await?;
        let cached = local
            .hashed
            .take()
            .filter(|(version, _)| *version == st.version && !version.is_nil());
        let known = cached
            .as_ref()
            .filter(|(_, h)| h.algorithm() == digest.algorithm())
            .map(|(_, h)| h.clone().finish());
        if let Some(actual) = known.clone().filter(|a| a != digest) {
            local.hashed = cached;
            return Err(mismatch(digest, actual));
        }
        let (source, exact) = match self.assemble(id, &mut st).await {
            Ok(s) => s,
            Err(e) => {
                local.hashed = cached;
                return Err(e);
            }
        };
        // What assemble did not make itself is re-hashed, whatever the running hash says.
        let known = known.filter(|_| exact);
        let blob = self.blob_key(digest);
        match &source {
            Some(key) if st.size > self.copy_limit => {
                // Too large for one CopyObject: streamed through the verifying put (which
                // hashes it on the way, and commits nothing if it does not match).
                let r = self.data.get(key).await.map_err(s3_error)?;
                let body = idle_timeout(r.into_stream())
                    .map(|c| c.map_err(io::Error::from))
                    .boxed();
                match self.put(digest, body).await {
                    Ok(_) => {}
                    Err(BlobError::Body(e)) => return Err(BlobError::Unavailable(e.to_string())),
                    Err(e) => {
                        local.hashed = cached;
                        return Err(e);
                    }
                }
            }
            Some(key) => {
                if known.is_none() {
                    let actual = self.hash_object(key, digest.algorithm()).await?;
                    if &actual != digest {
                        local.hashed = cached;
                        return Err(mismatch(digest, actual));
                    }
                }
                self.ctl.copy(key, &blob).await.map_err(s3_error)?;
            }
            None => {
                let actual = Digest::of(digest.algorithm(), b"");
                if &actual != digest {
                    local.hashed = cached;
                    return Err(mismatch(digest, actual));
                }
                self.ctl
                    .put(&blob, PutPayload::default())
                    .await
                    .map_err(s3_error)?;
            }
        }
        // The blob is committed; the session ends with its state, then its bytes go.
        match self.ctl.delete(&self.state_key(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(s3_error(e)),
        }
        let _ = self.delete_session_objects(id).await;
        drop(local);
        self.forget(id);
        Ok(st.size)
    }

    async fn upload_cancel(&self, id: Uuid) -> Result<bool> {
        let session = self.session(id);
        let local = session.lock().await;
        let st = match self.load_state(id).await {
            Ok((st, _)) => st,
            Err(BlobError::UploadUnknown) => return Ok(false),
            Err(e) => return Err(e),
        };
        if let Some(mp) = &st.multipart {
            match self.ctl.abort_multipart(&self.data_key(id, &st), mp).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_error(e)),
            }
        }
        self.ctl
            .delete(&self.state_key(id))
            .await
            .map_err(s3_error)?;
        self.delete_session_objects(id).await?;
        drop(local);
        self.forget(id);
        Ok(true)
    }

    async fn clean_temporary(&self, idle_since: SystemTime) -> Result<u64> {
        let mut n = 0;
        let tmp: Vec<object_store::ObjectMeta> = self
            .ctl
            .list(Some(&self.key("_tmp")))
            .try_collect()
            .await
            .map_err(s3_error)?;
        for m in tmp {
            if SystemTime::from(m.last_modified) >= idle_since {
                continue;
            }
            if m.location.as_ref().ends_with(".json") {
                // A crashed put's multipart upload: abort it first.
                let marker: Option<PutMarker> = match self.get_all(&m.location).await {
                    Ok(b) => serde_json::from_slice(&b).ok(),
                    Err(_) => continue,
                };
                if let Some(marker) = marker {
                    match self
                        .ctl
                        .abort_multipart(&Path::from(marker.key), &marker.multipart)
                        .await
                    {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(s3_error(e)),
                    }
                }
            }
            self.delete_quietly(&m.location).await;
            n += 1;
        }
        // Bytes of sessions whose state is gone (a finish or cancel interrupted after
        // deleting it).
        let uploads: Vec<object_store::ObjectMeta> = self
            .ctl
            .list(Some(&self.key("_uploads")))
            .try_collect()
            .await
            .map_err(s3_error)?;
        let with_state: std::collections::HashSet<&str> = uploads
            .iter()
            .filter_map(|m| self.relative(&m.location).strip_suffix("/state.json"))
            .collect();
        for m in &uploads {
            let rel = self.relative(&m.location);
            let Some((dir, _)) = rel.rsplit_once('/') else {
                continue;
            };
            if !with_state.contains(dir) && SystemTime::from(m.last_modified) < idle_since {
                self.delete_quietly(&m.location).await;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn uploads(&self) -> Result<Vec<UploadInfo>> {
        let metas: Vec<object_store::ObjectMeta> = self
            .ctl
            .list(Some(&self.key("_uploads")))
            .try_collect()
            .await
            .map_err(s3_error)?;
        let mut out = Vec::new();
        for m in metas {
            let rel = self.relative(&m.location);
            let Some(id) = rel
                .strip_prefix("_uploads/")
                .and_then(|r| r.strip_suffix("/state.json"))
                .and_then(|i| i.parse::<Uuid>().ok())
            else {
                continue;
            };
            match self.load_state(id).await {
                Ok((st, modified)) => out.push(UploadInfo {
                    id,
                    size: st.size,
                    modified,
                }),
                Err(BlobError::UploadUnknown) => {} // finished or cancelled meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn redirect(&self, digest: &Digest, ttl: Duration) -> Result<Option<String>> {
        let url = self
            .ctl
            .signed_url(reqwest::Method::GET, &self.blob_key(digest), ttl)
            .await
            .map_err(s3_error)?;
        Ok(Some(url.to_string()))
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn credentials_files_in_aws_format_or_holding_only_the_secret() {
        let aws = "[other]\naws_access_key_id = X\n\n[default]\naws_access_key_id = AKID\naws_secret_access_key = s3cr3t\n";
        assert_eq!(
            parse_credentials_file(aws),
            (Some("AKID".into()), Some("s3cr3t".into()))
        );
        assert_eq!(
            parse_credentials_file("s3cr3t\n"),
            (None, Some("s3cr3t".into()))
        );
        assert_eq!(parse_credentials_file("\n"), (None, None));
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        assert!(is_loopback("127.0.0.1:3900"));
        assert!(is_loopback("localhost:3900/"));
        assert!(is_loopback("[::1]:3900"));
        assert!(!is_loopback("s3.example.com"));
        let cfg = |endpoint: &str, allow_http| S3Config {
            endpoint: endpoint.into(),
            bucket: "b".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            allow_http,
            ..S3Config::default()
        };
        assert!(S3BlobStore::new(cfg("http://127.0.0.1:3900", false)).is_ok());
        let e = S3BlobStore::new(cfg("http://minio.internal:9000", false)).unwrap_err();
        assert!(e.to_string().contains("allow_http"), "{e}");
        assert!(S3BlobStore::new(cfg("http://minio.internal:9000", true)).is_ok());
        assert!(S3BlobStore::new(cfg("minio.internal:9000", true)).is_err());
    }
}
