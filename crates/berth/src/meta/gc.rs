//! What the garbage collector needs from the metadata: the lease that makes it the only
//! collector, the run history, liveness queries, and the two-step deletion of blobs.
//!
//! Deleting a blob is two transactions, so that a crash between them loses nothing:
//! 1. [`GcStore::gc_forget_blobs`]: under the write lock, re-check that each candidate
//!    is still garbage (nothing references it, nothing linked or created it after the
//!    cutoff), delete its rows and leave a tombstone;
//! 2. [`GcStore::gc_delete_files`]: under the write lock, for each tombstone whose
//!    digest has no row again, delete the file (several at once); then drop the
//!    tombstone.
//!
//! Recording a blob checks the file is present inside its own write transaction
//! ([`super::Presence`]), so the two never interleave into a row without a file.

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use oci::Digest;
use serde::Serialize;
use uuid::Uuid;

use super::Result;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GcReport {
    /// Tags deleted by retention rules.
    #[serde(default)]
    pub tags_deleted: u64,
    pub manifests_deleted: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub uploads_expired: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GcRun {
    pub id: i64,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// `schedule`, `cli` or `api`.
    pub trigger: String,
    pub dry_run: bool,
    pub grace_ms: i64,
    #[serde(flatten)]
    pub report: GcReport,
    pub error: Option<String>,
}

/// Bytes stored, counted as the registry's users see them.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// Every distinct blob once (what the disk holds, shared layers counted once).
    pub total_bytes: u64,
    pub blobs: u64,
    /// Per namespace: every blob linked in it (a layer shared by two namespaces counts
    /// in each).
    pub namespaces: Vec<NamespaceUsage>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NamespaceUsage {
    pub namespace: String,
    pub bytes: u64,
    pub repositories: u64,
    /// The namespace's quota in bytes, if an admin set one.
    pub quota: Option<u64>,
}

/// A retention rule: for repositories matching `repositories`, keep only the newest
/// `keep_tags` tags matching `tags`, and delete untagged manifests older than
/// `untagged_days`. Patterns are globs: `*` is any run of characters (`/` included),
/// `?` one character.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RetentionRule {
    /// Assigned by the registry.
    #[serde(default, skip_deserializing)]
    #[schema(read_only)]
    pub id: i64,
    #[schema(pattern = "^[A-Za-z0-9._/:*?-]+$", min_length = 1, max_length = 255)]
    pub repositories: String,
    #[serde(default = "any")]
    #[schema(pattern = "^[A-Za-z0-9._/:*?-]+$", min_length = 1, max_length = 255)]
    pub tags: String,
    /// Keep the newest N matching tags per repository.
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "crate::api::v1::opt_integer")]
    pub keep_tags: Option<i32>,
    /// Delete untagged images older than N days.
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "crate::api::v1::opt_integer")]
    pub untagged_days: Option<i32>,
}

fn any() -> String {
    "*".into()
}

impl RetentionRule {
    pub fn check(&self) -> std::result::Result<(), String> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 255
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/:*?".contains(c))
        };
        if !ok(&self.repositories) || !ok(&self.tags) {
            return Err("patterns use letters, digits, . _ - / : and the wildcards * and ?".into());
        }
        if self.keep_tags.is_some_and(|n| n < 0) || self.untagged_days.is_some_and(|n| n < 0) {
            return Err("keep_tags and untagged_days must not be negative".into());
        }
        // A rule with neither limit is allowed (it deletes nothing); the CLI insists.
        Ok(())
    }
}

/// What a retention rule deletes (or would, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retained {
    Tag { repo: String, tag: String },
    Manifest { repo: String, digest: String },
}

/// A manifest's reference to something the registry lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DanglingRef {
    pub repo: String,
    pub manifest: String,
    pub child: String,
    /// A child manifest (of an index) rather than a blob.
    pub is_manifest: bool,
}

/// Deletes one blob file; `Ok(false)` if it was already gone.
pub type DeleteFile<'a> =
    &'a (dyn Fn(Digest) -> BoxFuture<'static, anyhow::Result<bool>> + Send + Sync);

/// How many files a batch of [`GcStore::gc_delete_files`] deletes at once. The batch
/// holds the collector's lock (SQLite's write lock; PostgreSQL's exclusive collector
/// lock), so pushes wait for it; an S3 DELETE is a round trip of milliseconds, and 256
/// of them one after the other held pushes back for the sum.
pub const PARALLEL_DELETES: usize = 16;

/// Deletes the files of a batch of tombstones, but those `relinked` (pushed again since
/// they were tombstoned: live files), [`PARALLEL_DELETES`] at a time; how many were
/// there. On the first error the others still in flight are dropped and the error
/// returned: their tombstones stay, so the next batch or run deletes them.
pub(crate) async fn delete_files(
    batch: &[String],
    relinked: &std::collections::HashSet<String>,
    delete: DeleteFile<'_>,
) -> Result<u64> {
    use anyhow::Context;
    use futures_util::{StreamExt, TryStreamExt};
    let doomed = batch
        .iter()
        .filter(|d| !relinked.contains(*d))
        .map(|d| {
            d.parse::<Digest>()
                .with_context(|| format!("corrupt digest {d:?} in metadata"))
        })
        .collect::<Result<Vec<_>>>()?;
    let found: Vec<bool> = futures_util::stream::iter(doomed)
        .map(delete)
        .buffer_unordered(PARALLEL_DELETES)
        .try_collect()
        .await?;
    Ok(found.into_iter().filter(|f| *f).count() as u64)
}

#[async_trait]
pub trait GcStore: Send + Sync + 'static {
    /// Takes or renews the collector's lease for `holder`; `false` if another holder
    /// has an unexpired one.
    async fn gc_lease(&self, holder: &str, ttl_ms: i64) -> Result<bool>;

    async fn gc_release(&self, holder: &str) -> Result<()>;

    /// Whether some collector holds an unexpired lease now.
    async fn gc_lease_held(&self) -> Result<bool>;

    async fn gc_run_start(&self, trigger: &str, dry_run: bool, grace_ms: i64) -> Result<i64>;

    async fn gc_run_finish(&self, id: i64, report: &GcReport, error: Option<&str>) -> Result<()>;

    /// Newest first.
    async fn gc_runs(&self, limit: u32) -> Result<Vec<GcRun>>;

    /// Deletes manifests created before `cutoff` that no tag reaches (directly,
    /// through an index, or as a referrer of a reachable manifest). With `dry_run`,
    /// only counts them.
    async fn gc_delete_unreachable_manifests(&self, cutoff: i64, dry_run: bool) -> Result<u64>;

    /// Blobs that look like garbage now (re-checked when deleted).
    async fn gc_blob_candidates(&self, cutoff: i64) -> Result<Vec<(Digest, u64)>>;

    /// Step 1 of a deletion: rows of the still-garbage candidates become tombstones.
    /// Returns those tombstoned, with their sizes.
    async fn gc_forget_blobs(
        &self,
        candidates: &[Digest],
        cutoff: i64,
    ) -> Result<Vec<(Digest, u64)>>;

    /// Files in the store that have no row: tombstones them (if still rowless), so that
    /// step 2 deletes them. For files older than the cutoff only (the caller checks).
    async fn gc_tombstone_orphans(&self, digests: &[(Digest, u64)]) -> Result<u64>;

    /// Step 2: deletes the files of up to `limit` tombstones whose digest has no row.
    /// Returns (files deleted, tombstones left).
    async fn gc_delete_files(&self, limit: u32, delete: DeleteFile<'_>) -> Result<(u64, u64)>;

    /// Which of these digests have a row.
    async fn blobs_known(&self, digests: &[Digest]) -> Result<Vec<bool>>;

    /// Upload sessions opened before `cutoff`.
    async fn expired_uploads(&self, cutoff: i64) -> Result<Vec<Uuid>>;

    /// Forgets an upload session's row.
    async fn gc_forget_upload(&self, id: Uuid) -> Result<()>;

    async fn usage(&self) -> Result<Usage>;

    /// Bytes of the distinct blobs and manifests linked in `namespace`, and whether
    /// `digest` is one of them (linking it again would add nothing).
    async fn namespace_bytes(
        &self,
        namespace: &str,
        digest: Option<&Digest>,
    ) -> Result<(u64, bool)>;

    /// Blob rows in digest order after `after`, at most `n` (fsck's scan).
    async fn fsck_blob_rows(&self, after: Option<&str>, n: u32) -> Result<Vec<(Digest, u64)>>;

    /// References recorded for manifests whose target the registry lacks: a config or
    /// layer with no blob row, or a child manifest not in the repository.
    async fn fsck_dangling_refs(&self) -> Result<Vec<DanglingRef>>;

    /// What a broken blob breaks: `repo@manifest` (with its tags) for each manifest
    /// whose bytes it is or that references it, directly or through an index.
    async fn fsck_users_of(&self, digest: &Digest) -> Result<Vec<String>>;

    /// fsck --repair: forgets a blob whose file is missing or corrupt (its links, and
    /// the manifests whose bytes it is, with their tags), so clients push it again.
    async fn fsck_forget_blob(&self, digest: &Digest) -> Result<()>;

    /// fsck --repair: deletes manifests with dangling references (and their tags),
    /// repeatedly, since an index whose child went is dangling in turn. Returns
    /// `repo@manifest (tags: …)` of each.
    async fn fsck_drop_dangling(&self) -> Result<Vec<String>>;

    async fn retention_rules(&self) -> Result<Vec<RetentionRule>>;

    /// Stores a rule; its id.
    async fn retention_add(&self, rule: &RetentionRule) -> Result<i64>;

    async fn retention_remove(&self, id: i64) -> Result<bool>;

    /// Applies `rule`'s tag limit: deletes (unless `dry_run`) tags beyond the newest
    /// `keep_tags` matching ones per repository, sparing tags moved after `cutoff`.
    async fn retention_tags(
        &self,
        rule: &RetentionRule,
        cutoff: i64,
        dry_run: bool,
    ) -> Result<Vec<Retained>>;

    /// Applies `rule`'s untagged limit: deletes manifests no tag reaches (as
    /// [`GcStore::gc_delete_unreachable_manifests`] decides) in matching repositories,
    /// recorded before `older_than`.
    async fn retention_untagged(
        &self,
        rule: &RetentionRule,
        older_than: i64,
        dry_run: bool,
    ) -> Result<Vec<Retained>>;

    /// The quota of `namespace`, if one is set.
    async fn quota(&self, namespace: &str) -> Result<Option<u64>>;

    /// Sets (`Some`) or removes (`None`) the quota of `namespace`.
    async fn quota_set(&self, namespace: &str, bytes: Option<u64>) -> Result<()>;
}
