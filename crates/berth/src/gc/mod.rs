//! Online garbage collection: no read-only mode, no stopped server.
//!
//! A run, holding the collector lease (one collector at a time, across processes):
//! 1. expire upload sessions older than `gc.upload_expiry`;
//! 2. apply the retention rules (keep the newest N tags matching a pattern, delete
//!    untagged manifests older than N days), then, with `gc.untagged = "delete"`,
//!    delete manifests no tag reaches (directly, through
//!    an index, or as a referrer of a reachable manifest) that are older than the
//!    grace period;
//! 3. tombstone blobs nothing references and nothing recorded within the grace period
//!    (re-checked under the write lock), and store files that have no row (older than
//!    the grace period);
//! 4. delete the tombstoned files, each under the write lock after checking the blob
//!    was not pushed again; tombstones left by a crashed run are finished first.
//!
//! Metadata goes first and bytes last, so a crash at any point leaves at worst a file
//! nobody references, which the next run removes. `run_once` is what the scheduler,
//! `berth gc` and the API call.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use blobstore::BlobStore;
use futures_util::FutureExt;
use oci::Digest;

use crate::meta::gc::{GcReport, GcStore};
use crate::meta::now_ms;

/// Candidates handled per write transaction: short enough that pushes waiting on the
/// write lock barely notice.
const BATCH: usize = 256;
/// Files deleted per write transaction. Smaller than [`BATCH`]: each is a store round
/// trip (S3: a HEAD and a DELETE, 16 at once), and pushes wait for the batch. On PostgreSQL
/// and Garage sharing 2 cores, 256 held a push up to 200 ms; 64 holds it about 50.
const DELETE_BATCH: u32 = 64;
/// The lease outlives a crashed collector by at most this long.
const LEASE_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Untagged {
    Keep,
    Delete,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    /// Nothing recorded more recently than this is deleted.
    pub grace: Duration,
    pub untagged: Untagged,
    pub upload_expiry: Duration,
    /// `schedule`, `cli` or `api` (kept in the run history).
    pub trigger: &'static str,
}

/// Progress of a run, for a terminal display or logs.
#[derive(Debug, Clone)]
pub enum Progress {
    Phase(&'static str),
    Blobs {
        done: u64,
        total: u64,
    },
    /// A tag or manifest a retention rule deletes (or would, in a dry run).
    Retained(crate::meta::gc::Retained),
}

pub struct Collector {
    pub meta: Arc<dyn GcStore>,
    pub blobs: Arc<dyn BlobStore>,
}

#[derive(Debug, thiserror::Error)]
#[error("another garbage collection is running")]
pub struct AlreadyRunning;

impl Collector {
    /// One complete collection. Fails with [`AlreadyRunning`] if another collector holds
    /// the lease.
    pub async fn run_once(
        &self,
        opts: &Options,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> anyhow::Result<GcReport> {
        let holder = format!("{}:{}", std::process::id(), uuid::Uuid::new_v4());
        if !self.meta.gc_lease(&holder, LEASE_MS).await? {
            return Err(AlreadyRunning.into());
        }
        let run = self
            .meta
            .gc_run_start(opts.trigger, opts.dry_run, opts.grace.as_millis() as i64)
            .await?;
        let mut report = GcReport::default();
        let result = self.collect(opts, &holder, &mut report, progress).await;
        let error = result.as_ref().err().map(|e| format!("{e:#}"));
        self.meta
            .gc_run_finish(run, &report, error.as_deref())
            .await?;
        self.meta.gc_release(&holder).await?;
        result.map(|()| report)
    }

    /// Retention rules, in the order they were added: tag limits first (their
    /// manifests then become untagged), then untagged limits. In a dry run, manifests
    /// that the rules' tag deletions would leave untagged are counted by the next run.
    async fn retention(
        &self,
        cutoff: i64,
        now: i64,
        dry_run: bool,
        report: &mut GcReport,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> anyhow::Result<()> {
        use crate::meta::gc::Retained;
        let rules = self.meta.retention_rules().await?;
        for rule in &rules {
            for r in self.meta.retention_tags(rule, cutoff, dry_run).await? {
                report.tags_deleted += 1;
                progress(Progress::Retained(r));
            }
        }
        for rule in &rules {
            let Some(days) = rule.untagged_days else {
                continue;
            };
            let older_than = (now - i64::from(days) * 86_400_000).min(cutoff);
            for r in self
                .meta
                .retention_untagged(rule, older_than, dry_run)
                .await?
            {
                if matches!(r, Retained::Manifest { .. }) {
                    report.manifests_deleted += 1;
                }
                progress(Progress::Retained(r));
            }
        }
        Ok(())
    }

    async fn renew(&self, holder: &str) -> anyhow::Result<()> {
        if !self.meta.gc_lease(holder, LEASE_MS).await? {
            bail!("lost the collector lease (the run took too long between renewals)");
        }
        Ok(())
    }

    async fn collect(
        &self,
        opts: &Options,
        holder: &str,
        report: &mut GcReport,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let cutoff = now - opts.grace.as_millis() as i64;

        progress(Progress::Phase("finishing interrupted deletions"));
        if !opts.dry_run {
            self.delete_tombstoned(holder, report).await?;
        }

        progress(Progress::Phase("expiring abandoned uploads"));
        let upload_cutoff = now - opts.upload_expiry.as_millis() as i64;
        report.uploads_expired = self.expire_uploads(upload_cutoff, opts.dry_run).await?;
        if !opts.dry_run {
            let idle = std::time::UNIX_EPOCH + Duration::from_millis(upload_cutoff.max(0) as u64);
            self.blobs.clean_temporary(idle).await?;
        }

        progress(Progress::Phase("applying retention rules"));
        self.retention(cutoff, now, opts.dry_run, report, progress)
            .await?;
        self.renew(holder).await?;

        if opts.untagged == Untagged::Delete {
            progress(Progress::Phase("deleting unreachable manifests"));
            report.manifests_deleted += self
                .meta
                .gc_delete_unreachable_manifests(cutoff, opts.dry_run)
                .await?;
        }

        progress(Progress::Phase("finding unreferenced blobs"));
        let candidates = self.meta.gc_blob_candidates(cutoff).await?;
        let total = candidates.len() as u64;
        if opts.dry_run {
            report.blobs_deleted = total;
            report.bytes_freed = candidates.iter().map(|(_, s)| s).sum();
        } else {
            let mut done = 0;
            for chunk in candidates.chunks(BATCH) {
                self.renew(holder).await?;
                let digests: Vec<Digest> = chunk.iter().map(|(d, _)| d.clone()).collect();
                let gone = self.meta.gc_forget_blobs(&digests, cutoff).await?;
                report.bytes_freed += gone.iter().map(|(_, s)| s).sum::<u64>();
                done += chunk.len() as u64;
                progress(Progress::Blobs { done, total });
            }
        }

        progress(Progress::Phase("finding store files without metadata"));
        self.tombstone_orphans(cutoff, opts.dry_run, report).await?;

        if !opts.dry_run {
            progress(Progress::Phase("deleting files"));
            self.delete_tombstoned(holder, report).await?;
        }
        Ok(())
    }

    /// Cancels upload sessions idle since before `cutoff`, and forgets session rows
    /// whose bytes are gone.
    async fn expire_uploads(&self, cutoff: i64, dry_run: bool) -> anyhow::Result<u64> {
        let cutoff_time = std::time::UNIX_EPOCH + Duration::from_millis(cutoff.max(0) as u64);
        let mut expired = 0;
        for s in self.blobs.uploads().await? {
            if s.modified < cutoff_time {
                if !dry_run {
                    self.blobs.upload_cancel(s.id).await?;
                    self.meta.gc_forget_upload(s.id).await?;
                }
                expired += 1;
            }
        }
        for id in self.meta.expired_uploads(cutoff).await? {
            if matches!(
                self.blobs.upload_info(id).await,
                Err(blobstore::BlobError::UploadUnknown)
            ) && !dry_run
            {
                self.meta.gc_forget_upload(id).await?;
            }
        }
        Ok(expired)
    }

    async fn tombstone_orphans(
        &self,
        cutoff: i64,
        dry_run: bool,
        report: &mut GcReport,
    ) -> anyhow::Result<()> {
        let cutoff_time = std::time::UNIX_EPOCH + Duration::from_millis(cutoff.max(0) as u64);
        let old: Vec<blobstore::BlobInfo> = self
            .blobs
            .list()
            .await?
            .into_iter()
            .filter(|b| b.modified <= cutoff_time)
            .collect();
        for chunk in old.chunks(BATCH) {
            let digests: Vec<Digest> = chunk.iter().map(|b| b.digest.clone()).collect();
            let known = self.meta.blobs_known(&digests).await?;
            let orphans: Vec<(Digest, u64)> = chunk
                .iter()
                .zip(known)
                .filter(|(_, k)| !k)
                .map(|(b, _)| (b.digest.clone(), b.size))
                .collect();
            if orphans.is_empty() {
                continue;
            }
            if dry_run {
                report.blobs_deleted += orphans.len() as u64;
                report.bytes_freed += orphans.iter().map(|(_, s)| s).sum::<u64>();
            } else {
                self.meta.gc_tombstone_orphans(&orphans).await?;
                report.bytes_freed += orphans.iter().map(|(_, s)| s).sum::<u64>();
            }
        }
        Ok(())
    }

    async fn delete_tombstoned(&self, holder: &str, report: &mut GcReport) -> anyhow::Result<()> {
        let blobs = self.blobs.clone();
        let delete = move |d: Digest| {
            let blobs = blobs.clone();
            async move { Ok(blobs.delete(&d).await?) }.boxed()
        };
        loop {
            self.renew(holder).await?;
            let (deleted, left) = self.meta.gc_delete_files(DELETE_BATCH, &delete).await?;
            report.blobs_deleted += deleted;
            if left == 0 {
                return Ok(());
            }
        }
    }
}

/// Runs a collection every `interval` (the first one after one interval) for as long as
/// the server runs. Another process collecting at that moment just means this turn is
/// skipped.
pub async fn schedule(app: crate::app::AppState, interval: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let opts = app.gc_options("schedule", false);
        match app.collector().run_once(&opts, &|_| {}).await {
            Ok(r) => tracing::info!(
                blobs = r.blobs_deleted,
                bytes = r.bytes_freed,
                manifests = r.manifests_deleted,
                uploads = r.uploads_expired,
                "garbage collection finished"
            ),
            Err(e) if e.is::<AlreadyRunning>() => {
                tracing::info!("garbage collection skipped: another collector is running")
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "garbage collection failed"),
        }
    }
}
