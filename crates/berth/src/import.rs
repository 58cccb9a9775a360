//! `berth import-distribution DIR`: brings a registry:2 (CNCF distribution) filesystem
//! storage directory into Berth: its repositories, tags, manifests and blobs.
//!
//! The layout read (`DIR` is distribution's `rootdirectory`, or its `docker/registry/v2`):
//!
//! ```text
//! docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data                  the bytes
//! docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link    blobs of <name>
//! docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! ```
//!
//! Every blob is streamed through the blob store's verifying `put` (a digest mismatch is
//! reported and that blob skipped, never stored); manifests are validated like a push
//! and recorded children first. Running it again imports only what is missing and
//! changes nothing else: blobs already stored are not copied, manifests and tags Berth
//! already has are left as they are (a tag pushed to Berth since is never moved back).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use blobstore::BlobStore;
use futures_util::{FutureExt, TryStreamExt};
use oci::{Digest, ParsedManifest, RepoName, Tag};

use crate::meta::{Linked, Metadata, PutManifest};

/// One repository as distribution stores it.
#[derive(Debug, Default)]
pub struct SourceRepo {
    pub name: String,
    pub layers: Vec<Digest>,
    pub revisions: Vec<Digest>,
    pub tags: Vec<(String, Digest)>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub repositories: u64,
    pub tags: u64,
    pub manifests: u64,
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    pub blobs_present: u64,
    /// Tags Berth already had (left as they are).
    pub tags_present: u64,
    /// What could not be imported, and why.
    pub problems: Vec<String>,
}

pub enum Progress<'a> {
    Scanned {
        repositories: usize,
        blobs: usize,
    },
    Blob {
        done: usize,
        total: usize,
        bytes: u64,
    },
    Repository(&'a str),
}

/// `docker/registry/v2` under `dir` (or `dir` itself if it is that directory).
pub fn v2_root(dir: &Path) -> anyhow::Result<PathBuf> {
    for candidate in [dir.join("docker/registry/v2"), dir.to_path_buf()] {
        if candidate.join("repositories").is_dir() && candidate.join("blobs").is_dir() {
            return Ok(candidate);
        }
    }
    bail!(
        "{} is not a distribution (registry:2) storage directory: no docker/registry/v2/{{repositories,blobs}} in it",
        dir.display()
    )
}

fn read_link(path: &Path) -> anyhow::Result<Digest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: not a digest ({e})", path.display()))
}

/// The digests linked under `dir/<algorithm>/<hex>/link`.
fn links(dir: &Path, problems: &mut Vec<String>) -> Vec<Digest> {
    let mut out = Vec::new();
    let Ok(algs) = std::fs::read_dir(dir) else {
        return out;
    };
    for alg in algs.flatten() {
        let Ok(entries) = std::fs::read_dir(alg.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let link = e.path().join("link");
            if !link.is_file() {
                continue;
            }
            match read_link(&link) {
                Ok(d) => out.push(d),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
    }
    out.sort();
    out
}

/// Every repository under `v2/repositories` (names nest: `a/b` and `a/b/c` both may be).
pub fn scan(v2: &Path, problems: &mut Vec<String>) -> anyhow::Result<Vec<SourceRepo>> {
    let mut repos = Vec::new();
    let mut stack = vec![(v2.join("repositories"), String::new())];
    while let Some((dir, name)) = stack.pop() {
        let manifests = dir.join("_manifests");
        let layers = dir.join("_layers");
        if manifests.is_dir() || layers.is_dir() {
            let mut r = SourceRepo {
                name: name.clone(),
                layers: links(&layers, problems),
                revisions: links(&manifests.join("revisions"), problems),
                ..Default::default()
            };
            if let Ok(tags) = std::fs::read_dir(manifests.join("tags")) {
                for t in tags.flatten() {
                    let link = t.path().join("current/link");
                    if !link.is_file() {
                        continue; // a deleted tag leaves its directory behind
                    }
                    match read_link(&link) {
                        Ok(d) => r
                            .tags
                            .push((t.file_name().to_string_lossy().into_owned(), d)),
                        Err(e) => problems.push(format!("{e:#}")),
                    }
                }
            }
            r.tags.sort();
            repos.push(r);
        }
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if file.starts_with('_') || !e.path().is_dir() {
                continue;
            }
            let child = if name.is_empty() {
                file
            } else {
                format!("{name}/{file}")
            };
            stack.push((e.path(), child));
        }
    }
    repos.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(repos)
}

pub struct Importer {
    pub meta: Arc<dyn Metadata>,
    pub blobs: Arc<dyn BlobStore>,
    pub manifest_max_bytes: u64,
    pub v2: PathBuf,
}

impl Importer {
    fn data(&self, d: &Digest) -> PathBuf {
        self.v2
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
            .join("data")
    }

    /// Copies `d` into the store unless it is there; its size.
    async fn ensure_blob(&self, d: &Digest, report: &mut Report) -> anyhow::Result<u64> {
        if let Some(size) = self.blobs.stat(d).await? {
            report.blobs_present += 1;
            return Ok(size);
        }
        let path = self.data(d);
        let file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("blob {d}: {} is missing", path.display()))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        let size = self
            .blobs
            .put(d, Box::pin(stream))
            .await
            .with_context(|| format!("blob {d}"))?;
        report.blobs_copied += 1;
        report.bytes_copied += size;
        Ok(size)
    }

    fn presence(&self, d: &Digest) -> crate::meta::Presence<'static> {
        let (blobs, d) = (self.blobs.clone(), d.clone());
        async move { Ok(blobs.stat(&d).await?.is_some()) }.boxed()
    }

    async fn link(&self, repo: &RepoName, d: &Digest, report: &mut Report) -> anyhow::Result<()> {
        let size = self.ensure_blob(d, report).await?;
        let link = || self.meta.link_blob(repo, d, size, self.presence(d), None);
        match crate::meta::retry_conflicts(link).await? {
            Linked::Linked => Ok(()),
            Linked::Vanished => bail!(
                "blob {d} vanished while it was linked (garbage collection?); run the import again"
            ),
        }
    }

    pub async fn run(
        &self,
        repos: &[SourceRepo],
        report: &mut Report,
        progress: &dyn Fn(Progress),
    ) -> anyhow::Result<()> {
        let total_blobs: usize = repos
            .iter()
            .map(|r| r.layers.len() + r.revisions.len())
            .sum();
        let mut done = 0usize;
        for r in repos {
            progress(Progress::Repository(&r.name));
            let repo: RepoName = match r.name.parse() {
                Ok(n) => n,
                Err(e) => {
                    report.problems.push(format!(
                        "repository {:?}: not a valid name ({e}); skipped",
                        r.name
                    ));
                    continue;
                }
            };
            for d in &r.layers {
                if let Err(e) = self.link(&repo, d, report).await {
                    report.problems.push(format!("{repo}: {e:#}"));
                }
                done += 1;
                progress(Progress::Blob {
                    done,
                    total: total_blobs,
                    bytes: report.bytes_copied,
                });
            }
            // Manifests: parse all, then record children before their parents.
            let mut parsed: HashMap<Digest, (ParsedManifest, u64)> = HashMap::new();
            for d in &r.revisions {
                done += 1;
                match self.load_manifest(d, report).await {
                    Ok(p) => {
                        parsed.insert(d.clone(), p);
                    }
                    Err(e) => report.problems.push(format!("{repo}@{d}: {e:#}")),
                }
                progress(Progress::Blob {
                    done,
                    total: total_blobs,
                    bytes: report.bytes_copied,
                });
            }
            let mut pending: BTreeMap<Digest, ()> =
                parsed.keys().map(|d| (d.clone(), ())).collect();
            let mut recorded: Vec<Digest> = Vec::new();
            while !pending.is_empty() {
                let mut progressed = false;
                for d in pending.keys().cloned().collect::<Vec<_>>() {
                    let (m, size) = &parsed[&d];
                    // A child (of an index) not recorded yet: later.
                    if m.manifests
                        .iter()
                        .any(|c| pending.contains_key(&c.digest) && c.digest != d)
                    {
                        continue;
                    }
                    pending.remove(&d);
                    progressed = true;
                    // Already in Berth (an earlier run, or pushed since): left as it is.
                    if self.meta.manifest_by_digest(&repo, &d).await?.is_some() {
                        recorded.push(d);
                        continue;
                    }
                    match self.record(&repo, &d, m, *size, None, report).await {
                        Ok(()) => {
                            report.manifests += 1;
                            recorded.push(d);
                        }
                        Err(e) => report.problems.push(format!("{repo}@{d}: {e:#}")),
                    }
                }
                if !progressed {
                    report.problems.push(format!(
                        "{repo}: manifests referring to each other in a cycle; skipped"
                    ));
                    break;
                }
            }
            for (tag, d) in &r.tags {
                let t: Tag = match tag.parse() {
                    Ok(t) => t,
                    Err(e) => {
                        report
                            .problems
                            .push(format!("{repo}:{tag}: not a valid tag ({e}); skipped"));
                        continue;
                    }
                };
                // A tag Berth already has is Berth's now (imported before, or pushed
                // since): a later run never moves it back.
                if self.meta.manifest_by_tag(&repo, &t).await?.is_some() {
                    report.tags_present += 1;
                    continue;
                }
                let Some((m, size)) = parsed.get(d).filter(|_| recorded.contains(d)) else {
                    report.problems.push(format!(
                        "{repo}:{tag} points at {d}, which was not imported; skipped"
                    ));
                    continue;
                };
                match self.record(&repo, d, m, *size, Some(&t), report).await {
                    Ok(()) => report.tags += 1,
                    Err(e) => report.problems.push(format!("{repo}:{tag}: {e:#}")),
                }
            }
            report.repositories += 1;
        }
        Ok(())
    }

    async fn load_manifest(
        &self,
        d: &Digest,
        report: &mut Report,
    ) -> anyhow::Result<(ParsedManifest, u64)> {
        let size = self.ensure_blob(d, report).await?;
        if size > self.manifest_max_bytes {
            bail!("manifest of {size} bytes is larger than limits.manifest_max_bytes");
        }
        let mut bytes = Vec::with_capacity(size as usize);
        let mut s = self.blobs.read(d, None).await?;
        while let Some(chunk) = s.try_next().await? {
            bytes.extend_from_slice(&chunk);
        }
        let parsed = oci::manifest::parse(&bytes, None)
            .map_err(|e| anyhow::anyhow!("not a manifest Berth accepts: {e}"))?;
        Ok((parsed, size))
    }

    async fn record(
        &self,
        repo: &RepoName,
        d: &Digest,
        m: &ParsedManifest,
        size: u64,
        tag: Option<&Tag>,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let new = crate::api::manifests::record(m, d, size, None)?;
        for attempt in 0..2 {
            let put = || self.meta.put_manifest(repo, &new, tag, self.presence(d));
            match crate::meta::retry_conflicts(put).await? {
                PutManifest::Stored => return Ok(()),
                PutManifest::Vanished => {
                    bail!("its bytes vanished (garbage collection?); run the import again")
                }
                // distribution does not always link a manifest's config in _layers:
                // link it from the global blob store once, then retry.
                PutManifest::MissingReference(missing)
                    if attempt == 0 && m.manifests.iter().all(|c| c.digest != missing) =>
                {
                    self.link(repo, &missing, report).await?;
                }
                PutManifest::MissingReference(missing) => {
                    bail!("it references {missing}, which the source does not have")
                }
            }
        }
        unreachable!("the loop returns")
    }
}
