//! Registry metadata: repositories, which blobs each may serve, manifests, their
//! references, tags and upload sessions. All SQL lives under this module; the rest of
//! the code asks the [`Metadata`] trait.
//!
//! Every change that belongs to one client request (a manifest with its references and
//! tag) is one transaction.

use async_trait::async_trait;
use oci::{Digest, RepoName, Tag};
use uuid::Uuid;

pub mod accounts;
pub mod gc;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

pub type Result<T> = anyhow::Result<T>;

/// Whether a blob's file is in the blob store, asked inside the transaction that
/// records it. Garbage collection deletes files only inside write transactions that
/// found no row for them, so a row is never committed for a file that is gone.
pub type Presence<'a> = futures_util::future::BoxFuture<'a, anyhow::Result<bool>>;

/// Outcome of recording a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    Linked,
    /// The file disappeared (garbage collection deleted it meanwhile): push it again.
    Vanished,
}

/// A manifest to record (its bytes are already in the blob store).
pub struct NewManifest<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub size: u64,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a Digest>,
    /// JSON object of annotations, reported by the referrers API.
    pub annotations: Option<String>,
    /// Config and layers: must be linked to the repository.
    pub blobs: Vec<&'a Digest>,
    /// Child manifests (of an index): must exist in the repository.
    pub children: Vec<&'a Digest>,
    /// The account pushing it, recorded with the tag.
    pub pushed_by: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutManifest {
    Stored,
    /// The manifest's bytes disappeared (garbage collection): push it again.
    Vanished,
    /// A referenced blob or child manifest is not in the repository.
    MissingReference(Digest),
}

#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// A repository as listings show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RepoSummary {
    pub name: String,
    pub tags: u64,
    pub manifests: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When a tag of it last moved (Unix milliseconds).
    pub updated_at: Option<i64>,
}

/// A tag with what it points at.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TagDetail {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    /// Manifest plus the blobs it references (config and layers); for an index, plus
    /// every child manifest with its blobs (a layer shared by two platforms counts twice).
    pub size: u64,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// The account that pushed the tag there (absent: unknown or authentication off).
    pub pushed_by: Option<String>,
}

/// Which tags [`Metadata::tag_details`] returns.
#[derive(Debug, Clone, Copy)]
pub struct TagFilter<'a> {
    /// Names after this one.
    pub last: Option<&'a str>,
    /// At most this many.
    pub n: u32,
    /// Only tags pointing at this manifest digest.
    pub digest: Option<&'a str>,
}

impl TagFilter<'_> {
    /// Every tag.
    pub const ALL: TagFilter<'static> = TagFilter {
        last: None,
        n: u32::MAX,
        digest: None,
    };
}

/// Some tags, and how many match the filter in all (ignoring `last` and `n`).
#[derive(Debug, Clone)]
pub struct TagPage {
    pub tags: Vec<TagDetail>,
    pub total: u64,
}

/// One page of a sorted listing.
pub struct Page {
    pub items: Vec<String>,
    /// There are more items after the last one.
    pub more: bool,
}

#[async_trait]
pub trait Metadata: Send + Sync + 'static {
    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Records a blob now present in the store and links it to `repo` (creating the
    /// repository if needed). `upload`: the upload session that produced it, closed in
    /// the same transaction (one durable commit per pushed blob, not two).
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        present: Presence<'_>,
        upload: Option<Uuid>,
    ) -> Result<Linked>;

    /// Size of `digest` if `repo` may serve it.
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;

    /// Repositories that link `digest` (candidates for a cross-repository mount).
    async fn repos_with_blob(&self, digest: &Digest) -> Result<Vec<RepoName>>;

    /// Removes `digest` from `repo`. Returns whether it was linked.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Records an upload session of `owner` (see [`Metadata::uploads_open`]).
    async fn upload_create(&self, id: Uuid, repo: &RepoName, owner: &str) -> Result<()>;

    /// How many upload sessions `owner` has open.
    async fn uploads_open(&self, owner: &str) -> Result<u64>;

    /// The repository an upload session belongs to.
    async fn upload_repo(&self, id: Uuid) -> Result<Option<RepoName>>;

    async fn upload_delete(&self, id: Uuid) -> Result<()>;

    /// Records a manifest, its references and optionally a tag, in one transaction,
    /// after checking that everything it references is in the repository.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest<'_>,
        tag: Option<&Tag>,
        present: Presence<'_>,
    ) -> Result<PutManifest>;

    async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<ManifestRow>>;

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>>;

    /// Deletes a manifest and every tag pointing at it. Returns whether it existed.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Deletes a tag only. Returns whether it existed.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;

    /// Tags of `repo` in byte order after `last`, at most `n`; `None` if the
    /// repository is unknown.
    async fn tags(&self, repo: &RepoName, last: Option<&str>, n: u32) -> Result<Option<Page>>;

    /// Repository names in byte order after `last`, at most `n`; with `namespaces`,
    /// only repositories in those namespaces.
    async fn catalog(
        &self,
        namespaces: Option<&[String]>,
        last: Option<&str>,
        n: u32,
    ) -> Result<Page>;

    /// Repositories with counts, filtered like [`Metadata::catalog`] and by a
    /// substring of the name.
    async fn repositories(
        &self,
        namespaces: Option<&[String]>,
        contains: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> Result<(Vec<RepoSummary>, bool)>;

    /// Tags of a repository with their manifests, in name order, as `filter` asks;
    /// `None` if the repository doesn't exist.
    async fn tag_details(&self, repo: &RepoName, filter: TagFilter<'_>) -> Result<Option<TagPage>>;

    /// Deletes a repository with its tags, manifests and blob links. Returns whether it
    /// existed. Blobs are left to garbage collection.
    async fn delete_repository(&self, repo: &RepoName) -> Result<bool>;

    /// Manifests in `repo` whose subject is `subject`, optionally only those of one
    /// artifact type.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>>;
}

/// Why the database refused a transaction because of another one running at the same
/// time, not because of anything in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// PostgreSQL rolled it back, a deadlock victim (40P01) or a serialization failure
    /// (40001): running it again at once can succeed.
    Aborted,
    /// SQLite's write lock was still held when its busy timeout (10 s) ran out (primary
    /// codes 5 and 6): it has waited already, so it is not run again here.
    Busy,
}

/// The [`Conflict`] that failed `e`, if any.
///
/// The transactions are written so that none should happen (lock orders in `postgres`'s
/// module doc, one writer in SQLite's): this is the net under that design, not the
/// design.
pub fn conflict(e: &anyhow::Error) -> Option<Conflict> {
    e.chain().find_map(|cause| {
        let Some(sqlx::Error::Database(db)) = cause.downcast_ref::<sqlx::Error>() else {
            return None;
        };
        let code = db.code()?;
        match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            Some(_) => matches!(&*code, "40P01" | "40001").then_some(Conflict::Aborted),
            // SQLite reports the extended result code; its low byte is the primary one.
            None => code
                .parse::<i32>()
                .is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                .then_some(Conflict::Busy),
        }
    })
}

/// How many times [`retry_conflicts`] runs a transaction in all.
pub const CONFLICT_TRIES: u32 = 4;

/// Runs `op` again while it fails as [`Conflict::Aborted`], at most [`CONFLICT_TRIES`]
/// times in all, after a pause of 5, 10, 20 ms plus up to as much again at random (so
/// that the two sides of a deadlock do not meet again). `op` must be a whole
/// transaction: the database rolled the failed run back, so nothing of it is left to
/// undo. The last error is returned as it came.
pub async fn retry_conflicts<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = std::time::Duration::from_millis(5);
    for _ in 1..CONFLICT_TRIES {
        match op().await {
            Err(e) if conflict(&e) == Some(Conflict::Aborted) => {
                tracing::debug!(
                    error = format!("{e:#}"),
                    "transaction conflicted; running it again"
                );
                let jitter = pause.mul_f64(f64::from(Uuid::new_v4().as_u128() as u16) / 65536.0);
                tokio::time::sleep(pause + jitter).await;
                pause *= 2;
            }
            done => return done,
        }
    }
    op().await
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
