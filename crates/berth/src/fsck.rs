//! `berth fsck`: checks that what the metadata says is what the blob store holds.
//!
//! 1. every blob row has its file, of the recorded size;
//! 2. every file's content hashes to its name (streamed, never whole in memory);
//! 3. every reference a manifest recorded (config, layer, child manifest) exists.
//!
//! Files without a row are counted, not reported as problems: garbage collection
//! removes them after the grace period (a push in flight has one for a moment).
//! With `repair`, corrupt files are moved to the store's quarantine, missing or
//! corrupt blobs are forgotten (their links, and manifests whose bytes they are), and
//! manifests left referencing what is gone are deleted with their tags, so a push of
//! the same image repairs it; what was broken is listed. fsck holds the garbage
//! collector's lease while it runs, so no collection deletes files under it, and is
//! safe while the server runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::bail;
use blobstore::BlobStore;
use futures_util::TryStreamExt;
use oci::{Digest, DigestHasher};

use crate::meta::gc::{DanglingRef, GcStore};

/// What is wrong with one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobProblem {
    /// A row, but no file.
    Missing,
    /// The file's size is not the recorded one.
    Size { recorded: u64, actual: u64 },
    /// The content hashes to something else.
    Corrupt { actual: Digest },
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub digest: Digest,
    pub problem: BlobProblem,
    /// `repo@manifest (tags: …)` this breaks.
    pub users: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub rows_checked: u64,
    /// Files no row names (garbage collection's to remove).
    pub unreferenced_files: u64,
    pub findings: Vec<Finding>,
    pub dangling: Vec<DanglingRef>,
    /// With repair: blobs quarantined / forgotten, and the broken manifests deleted.
    pub quarantined: u64,
    pub forgotten: u64,
    pub dropped: Vec<String>,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.findings.is_empty() && self.dangling.is_empty()
    }
}

pub enum Progress {
    Phase(&'static str),
    Verified { done: u64, total: u64 },
}

const HOLDER_PREFIX: &str = "fsck";
const LEASE_MS: i64 = 60_000;

pub struct Fsck {
    pub meta: Arc<dyn GcStore>,
    pub blobs: Arc<dyn BlobStore>,
}

impl Fsck {
    pub async fn run(&self, repair: bool, progress: &dyn Fn(Progress)) -> anyhow::Result<Report> {
        let holder = format!("{HOLDER_PREFIX}-{}", uuid::Uuid::new_v4());
        if !self.meta.gc_lease(&holder, LEASE_MS).await? {
            bail!("a garbage collection is running; run fsck when it has finished");
        }
        let r = self.check(&holder, repair, progress).await;
        let _ = self.meta.gc_release(&holder).await;
        r
    }

    async fn renew(&self, holder: &str) -> anyhow::Result<()> {
        if !self.meta.gc_lease(holder, LEASE_MS).await? {
            bail!("lost the collector's lease (fsck took over a minute between renewals)");
        }
        Ok(())
    }

    async fn check(
        &self,
        holder: &str,
        repair: bool,
        progress: &dyn Fn(Progress),
    ) -> anyhow::Result<Report> {
        let mut report = Report::default();
        progress(Progress::Phase("listing the blob store"));
        let files: HashMap<Digest, u64> = self
            .blobs
            .list()
            .await?
            .into_iter()
            .map(|b| (b.digest, b.size))
            .collect();

        // 1. Rows against files.
        progress(Progress::Phase("checking the metadata against the store"));
        let mut problems: Vec<(Digest, BlobProblem)> = Vec::new();
        let mut rows: HashSet<Digest> = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.meta.fsck_blob_rows(after.as_deref(), 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.to_string());
            for (d, size) in page {
                report.rows_checked += 1;
                let listed = files.get(&d).copied();
                if listed != Some(size) {
                    // A push may have committed its file after the listing: look again
                    // before calling anything missing or wrong.
                    match self.blobs.stat(&d).await? {
                        None => problems.push((d.clone(), BlobProblem::Missing)),
                        Some(actual) if actual != size => problems.push((
                            d.clone(),
                            BlobProblem::Size {
                                recorded: size,
                                actual,
                            },
                        )),
                        Some(_) => {}
                    }
                }
                rows.insert(d);
            }
            self.renew(holder).await?;
        }
        report.unreferenced_files = files.keys().filter(|d| !rows.contains(*d)).count() as u64;

        // 2. Every file's content against its name.
        let total = files.len() as u64;
        let mut last_renew = std::time::Instant::now();
        for (i, (d, size)) in files.iter().enumerate() {
            progress(Progress::Verified {
                done: i as u64,
                total,
            });
            let actual = self.hash(d).await?;
            if &actual != d {
                problems.push((d.clone(), BlobProblem::Corrupt { actual }));
            }
            report.blobs_checked += 1;
            report.bytes_checked += size;
            if last_renew.elapsed().as_secs() >= 10 {
                self.renew(holder).await?;
                last_renew = std::time::Instant::now();
            }
        }
        progress(Progress::Verified { done: total, total });

        // 3. References.
        progress(Progress::Phase("checking manifests' references"));
        report.dangling = self.meta.fsck_dangling_refs().await?;

        problems.sort_by(|a, b| a.0.cmp(&b.0));
        for (digest, problem) in problems {
            let users = self.meta.fsck_users_of(&digest).await?;
            report.findings.push(Finding {
                digest,
                problem,
                users,
            });
        }

        if repair {
            progress(Progress::Phase("repairing"));
            for f in &report.findings {
                self.renew(holder).await?;
                if !matches!(f.problem, BlobProblem::Missing)
                    && self.blobs.quarantine(&f.digest).await?
                {
                    report.quarantined += 1;
                }
                self.meta.fsck_forget_blob(&f.digest).await?;
                report.forgotten += 1;
            }
            // Images whose layers (or child manifests) went can't be pulled: they go
            // too, so that pulls fail at once with MANIFEST_UNKNOWN and a push of the
            // same image repairs it completely.
            if !report.findings.is_empty() || !report.dangling.is_empty() {
                report.dropped = self.meta.fsck_drop_dangling().await?;
            }
        }
        Ok(report)
    }

    /// The digest of a stored file's content, in its own algorithm.
    async fn hash(&self, d: &Digest) -> anyhow::Result<Digest> {
        let mut h = DigestHasher::new(d.algorithm());
        let mut s = self.blobs.read(d, None).await?;
        while let Some(chunk) = s.try_next().await? {
            h.update(&chunk);
        }
        Ok(h.finish())
    }
}
