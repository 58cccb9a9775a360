//! The workloads, and the suite that runs them against every target: in rounds, each
//! workload on every target in turn, the order of the targets reversed every other
//! round, so that both see the same machine (other processes, page cache, disk state).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::client;
use crate::data::{random_bytes, seed, sha256_digest, Pattern, MIB};
use crate::layout::{make_layout, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::limits;
use crate::record::{Record, MACHINE};
use crate::registry::{
    has_blob, mount, push_chunked, push_monolithic, push_post_put, push_single_post, put_manifest,
    request, Target, ACCEPT_MANIFESTS,
};
use crate::runner::{run_workers, Meter, Stop};

/// The `gc` workload's images: distinct tiny blobs, named by run, image and index.
#[derive(Clone)]
struct GcSeed {
    run: Arc<str>,
    per: usize,
}

impl GcSeed {
    fn blob(&self, k: usize, j: usize) -> (Bytes, String) {
        let b = Bytes::from(format!("berth-bench gc {} image {k} blob {j}\n", self.run));
        let d = sha256_digest(&b);
        (b, d)
    }

    fn repo(&self, k: usize) -> String {
        format!("gc/r{:03}", k % 100)
    }

    /// Image `k`: blob 0 is its config, the others its layers.
    fn manifest(&self, k: usize) -> Bytes {
        let desc = |j: usize, mt: &str| {
            let (b, d) = self.blob(k, j);
            json!({"mediaType": mt, "digest": d, "size": b.len()})
        };
        let layers: Vec<_> = (1..self.per)
            .map(|j| desc(j, "application/vnd.oci.image.layer.v1.tar+gzip"))
            .collect();
        Bytes::from(
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": desc(0, CONFIG_MEDIA_TYPE),
                "layers": layers,
            }))
            .expect("JSON"),
        )
    }
}

/// The machine's limits, measured once per round.
pub const MACHINE_WORKLOADS: &[&str] = &[
    "sha256",
    "sha256-openssl",
    "disk-write",
    "fsync-4k",
    "loopback-get",
    "loopback-put",
];

/// Registry workloads, in the order a round runs them. `-cN` is the number of
/// connections and may be changed (e.g. `small-get-c16`).
pub const REGISTRY_WORKLOADS: &[&str] = &[
    "push-mono",
    "push-chunked",
    "pull",
    "pull-ranged",
    "small-push-c8",
    "small-push-c64",
    "small-head-c8",
    "small-head-c64",
    "small-get-c8",
    "small-get-c64",
    "manifest-tag-c64",
    "manifest-digest-c64",
    "catalog-first",
    "catalog-deep",
    "tags-first",
    "tags-deep",
    "skopeo-push",
    "skopeo-pull",
    "ui-images-first",
    "ui-images-deep",
    "ui-search",
    "ui-registry",
    "ui-repository",
    "gc",
];

const CONN_PREFIXES: &[&str] = &[
    "small-push-c",
    "small-head-c",
    "small-get-c",
    "manifest-tag-c",
    "manifest-digest-c",
];

/// How a workload's result is best read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Metric {
    /// Payload MB/s (one large transfer).
    MbPerS,
    /// Requests (or blobs) per second, with p50/p99 latency.
    OpsPerS,
}

pub fn metric_of(workload: &str) -> Metric {
    let throughput = workload.starts_with("push-")
        || workload.starts_with("pull")
        || workload.starts_with("skopeo-")
        || matches!(
            workload,
            "sha256" | "sha256-openssl" | "disk-write" | "loopback-get" | "loopback-put"
        );
    if throughput {
        Metric::MbPerS
    } else {
        Metric::OpsPerS
    }
}

fn conns_of(workload: &str) -> Option<(&'static str, usize)> {
    CONN_PREFIXES.iter().find_map(|p| {
        let n = workload.strip_prefix(p)?.parse::<usize>().ok()?;
        (n > 0).then_some((*p, n))
    })
}

/// Expands `all`, `machine`, `registry` or a comma-separated list into workload names.
pub fn expand(list: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item {
            "all" => out.extend(
                MACHINE_WORKLOADS
                    .iter()
                    .chain(REGISTRY_WORKLOADS)
                    .map(|s| s.to_string()),
            ),
            "machine" => out.extend(MACHINE_WORKLOADS.iter().map(|s| s.to_string())),
            "registry" => out.extend(REGISTRY_WORKLOADS.iter().map(|s| s.to_string())),
            w if MACHINE_WORKLOADS.contains(&w)
                || REGISTRY_WORKLOADS.contains(&w)
                || conns_of(w).is_some() =>
            {
                out.push(w.to_string())
            }
            w => bail!(
                "unknown workload {w:?}; known: all, machine, registry, {}, {}",
                MACHINE_WORKLOADS.join(", "),
                REGISTRY_WORKLOADS.join(", ")
            ),
        }
    }
    Ok(out)
}

/// The sizes of everything; [`Sizes::full`] is the issue's, [`Sizes::quick`] a smoke run.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub blob: u64,
    pub chunk: u64,
    pub range: u64,
    pub range_conns: usize,
    pub small_count: usize,
    pub small_size: usize,
    pub duration: Duration,
    pub catalog_repos: usize,
    pub catalog_tags: usize,
    pub page: usize,
    pub seed_conns: usize,
    pub skopeo_layers: usize,
    pub skopeo_layer_size: u64,
    pub gc_images: usize,
    pub gc_blobs: usize,
}

impl Sizes {
    pub fn full() -> Self {
        Sizes {
            blob: 1024 * MIB,
            chunk: 16 * MIB,
            range: 16 * MIB,
            range_conns: 4,
            small_count: 1000,
            small_size: 4096,
            duration: Duration::from_secs(2),
            catalog_repos: 100_000,
            catalog_tags: 10_000,
            page: 100,
            seed_conns: 64,
            skopeo_layers: 5,
            skopeo_layer_size: 50 * MIB,
            gc_images: 20_000,
            gc_blobs: 5,
        }
    }

    pub fn quick() -> Self {
        Sizes {
            blob: 64 * MIB,
            small_count: 200,
            duration: Duration::from_millis(500),
            catalog_repos: 2_000,
            catalog_tags: 500,
            skopeo_layer_size: 4 * MIB,
            gc_images: 500,
            ..Self::full()
        }
    }
}

const CATALOG_SRC: &str = "bench/catalog-src";
const CATALOG_BLOB: &[u8] = b"berth-bench: the blob every seeded repository links\n";
const TAGS_REPO: &str = "bench/tags";

/// What has been set up in one target.
#[derive(Default)]
struct State {
    /// (round, mode) -> (repository, digest) of the large blobs pushed.
    big: HashMap<(u32, &'static str), (String, String)>,
    /// Small blobs to HEAD/GET: their paths.
    small: Option<Arc<Vec<String>>>,
    /// The image for manifest GETs: repository, manifest digest, manifest size.
    image: Option<(String, String, u64)>,
    catalog_seeded: bool,
    tags_seeded: bool,
    /// Whether the target serves a web UI at `/` (probed once; ui-* skip it if not).
    ui: Option<bool>,
    /// The image pushed by skopeo: round, repository, bytes, digests.
    skopeo: Option<(u32, String, u64, Vec<String>)>,
}

pub struct Bench {
    pub targets: Vec<Target>,
    states: Vec<State>,
    pub sizes: Sizes,
    /// Scratch space on the disk under test (layouts, disk probes).
    pub work: PathBuf,
    out: Option<std::fs::File>,
    /// Makes this run's repositories and blobs new to a registry that already holds
    /// those of earlier runs.
    run_id: String,
    run_seed: u64,
    big: HashMap<(u32, &'static str), (Pattern, String)>,
    loopback: Option<SocketAddr>,
    skopeo_env: Option<Vec<(String, String)>>,
}

fn failed(workload: &str, registry: &str, round: u32, e: anyhow::Error) -> Record {
    eprintln!("  {workload} on {registry} failed: {e:#}");
    let mut r = Record::new(workload, registry, round, 0);
    r.errors = 1;
    r.note = Some(format!("failed: {e:#}"));
    r
}

impl Bench {
    pub fn new(
        targets: Vec<Target>,
        sizes: Sizes,
        work: PathBuf,
        out: Option<PathBuf>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&work)?;
        let out = out
            .map(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .with_context(|| format!("opening {}", p.display()))
            })
            .transpose()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64;
        let run_id = format!("{:08x}", seed(&[nanos, std::process::id() as u64]) as u32);
        Ok(Bench {
            states: targets.iter().map(|_| State::default()).collect(),
            targets,
            sizes,
            work,
            out,
            run_seed: seed(&[nanos]),
            run_id,
            big: HashMap::new(),
            loopback: None,
            skopeo_env: None,
        })
    }

    fn emit(&mut self, r: &Record) -> Result<()> {
        let line = serde_json::to_string(r)?;
        println!("{line}");
        if let Some(f) = &mut self.out {
            writeln!(f, "{line}")?;
        }
        let value = match metric_of(&r.workload) {
            Metric::MbPerS => format!("{:9.1} MB/s", r.mb_per_s),
            Metric::OpsPerS => format!(
                "{:9.1} ops/s  p50 {:.2} ms  p99 {:.2} ms",
                r.ops_per_s, r.p50_ms, r.p99_ms
            ),
        };
        let rss = r
            .rss_peak_kib
            .map(|k| format!("  peak RSS {:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_default();
        let err = if r.errors > 0 {
            format!("  ERRORS {}", r.errors)
        } else {
            String::new()
        };
        eprintln!(
            "  r{} {:<20} {:<13} {value} ({:.2} s){rss}{err}",
            r.round, r.workload, r.registry, r.seconds
        );
        Ok(())
    }

    /// Runs `workloads` for `rounds` rounds. Failures are recorded, not fatal.
    pub async fn run(&mut self, workloads: &[String], rounds: u32) -> Result<()> {
        for t in &mut self.targets {
            t.probe().await?;
            eprintln!(
                "{} at {}: monolithic push as {}{}",
                t.name,
                t.url,
                if t.single_post {
                    "one POST ?digest="
                } else {
                    "POST then PUT ?digest="
                },
                if t.creds.is_some() {
                    ", bearer tokens"
                } else {
                    ""
                }
            );
        }
        self.prepare(workloads).await?;
        for round in 1..=rounds {
            eprintln!("== round {round}/{rounds}");
            let mut order: Vec<usize> = (0..self.targets.len()).collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for w in workloads {
                if MACHINE_WORKLOADS.contains(&w.as_str()) {
                    let r = match self.machine_workload(w, round).await {
                        Ok(r) => r,
                        Err(e) => failed(w, MACHINE, round, e),
                    };
                    self.emit(&r)?;
                    continue;
                }
                for &i in &order {
                    let only = &self.targets[i].only;
                    if !only.is_empty() && !only.contains(w) {
                        continue;
                    }
                    if w.starts_with("ui-") && !self.has_ui(i).await {
                        continue;
                    }
                    // Garbage collection is measured once (it needs a registry of its
                    // own size), on targets that say how they collect.
                    if w == "gc" && (round > 1 || self.targets[i].gc_cmd.is_none()) {
                        continue;
                    }
                    let r = match self.registry_workload(i, w, round).await {
                        Ok(r) => r,
                        Err(e) => failed(w, &self.targets[i].name.clone(), round, e),
                    };
                    self.emit(&r)?;
                }
            }
            self.end_round(round);
        }
        Ok(())
    }

    /// Drops the round's large blobs from the data directories (as GC would).
    fn end_round(&mut self, round: u32) {
        for (t, s) in self.targets.iter().zip(&mut self.states) {
            s.big.retain(|(r, _), (_, d)| {
                if *r == round {
                    t.reclaim(d);
                }
                *r != round
            });
            if let Some((r, _, _, digests)) = &s.skopeo {
                if *r == round {
                    digests.iter().for_each(|d| t.reclaim(d));
                    s.skopeo = None;
                }
            }
        }
        self.big.retain(|(r, _), _| *r != round);
    }

    async fn machine_workload(&mut self, w: &str, round: u32) -> Result<Record> {
        let s = &self.sizes;
        match w {
            "sha256" => limits::sha256_sha2(round, s.blob).await,
            "sha256-openssl" => {
                limits::sha256_openssl(round, s.duration.as_secs_f64().round().max(1.0) as u32)
                    .await
            }
            "disk-write" => limits::disk_write(round, &self.work, s.blob).await,
            "fsync-4k" => limits::fsync_4k(round, &self.work, s.duration).await,
            "loopback-get" | "loopback-put" => {
                let addr = match self.loopback {
                    Some(a) => a,
                    None => {
                        let a = limits::loopback_server().await?;
                        self.loopback = Some(a);
                        a
                    }
                };
                limits::loopback(round, addr, w == "loopback-put", self.sizes.blob).await
            }
            _ => bail!("unknown machine workload {w}"),
        }
    }

    async fn registry_workload(&mut self, i: usize, w: &str, round: u32) -> Result<Record> {
        match w {
            "push-mono" => self.push_big(i, round, "mono").await,
            "push-chunked" => self.push_big(i, round, "chunked").await,
            "pull" => self.pull(i, round, false).await,
            "pull-ranged" => self.pull(i, round, true).await,
            "catalog-first" | "catalog-deep" | "tags-first" | "tags-deep" => {
                self.listing(i, w, round).await
            }
            "ui-images-first" | "ui-images-deep" | "ui-search" | "ui-registry"
            | "ui-repository" => self.ui_page(i, w, round).await,
            "gc" => self.gc(i, round).await,
            "skopeo-push" => self.skopeo_push(i, round).await,
            "skopeo-pull" => self.skopeo_pull(i, round).await,
            _ => match conns_of(w) {
                Some(("small-push-c", n)) => self.small_push(i, w, round, n).await,
                Some(("small-head-c", n)) => self.small_read(i, w, round, n, false).await,
                Some(("small-get-c", n)) => self.small_read(i, w, round, n, true).await,
                Some(("manifest-tag-c", n)) => self.manifest_get(i, w, round, n, true).await,
                Some(("manifest-digest-c", n)) => self.manifest_get(i, w, round, n, false).await,
                _ => bail!("unknown workload {w}"),
            },
        }
    }

    fn repo(&self, what: &str) -> String {
        format!("bench/{}/{what}", self.run_id)
    }

    /// The round's large blob for `mode` (its digest is computed once, untimed).
    fn big_blob(&mut self, round: u32, mode: &'static str) -> (Pattern, String) {
        let s = seed(&[self.run_seed, round as u64, (mode == "chunked") as u64]);
        let len = self.sizes.blob;
        self.big
            .entry((round, mode))
            .or_insert_with(|| {
                let p = Pattern::new(s, len);
                let d = p.digest();
                (p, d)
            })
            .clone()
    }

    async fn push_big(&mut self, i: usize, round: u32, mode: &'static str) -> Result<Record> {
        let (p, digest) = self.big_blob(round, mode);
        let repo = self.repo(&format!("big-{mode}-r{round}"));
        let chunk = self.sizes.chunk;
        let t = &self.targets[i];
        let mut c = t.conn();
        c.warm().await?;
        let mut m = Meter::new(t.pid);
        m.start();
        let note = if mode == "mono" {
            push_monolithic(&mut c, t, &repo, &digest, p.body(0, p.len), p.len).await?;
            if t.single_post {
                "one POST ?digest= with the body".to_string()
            } else {
                "POST, then PUT ?digest= with the body".to_string()
            }
        } else {
            let n = push_chunked(&mut c, &repo, &digest, &p, chunk).await?;
            format!("{n} requests: POST, PATCH x {} MiB, PUT", chunk / MIB)
        };
        let el = m.elapsed().as_micros() as u32;
        let mut r = m.finish(
            Record::new(&format!("push-{mode}"), &t.name, round, 1),
            p.len,
            1,
            &mut [el],
        );
        r.note = Some(note);
        self.states[i].big.insert((round, mode), (repo, digest));
        Ok(r)
    }

    async fn pull(&mut self, i: usize, round: u32, ranged: bool) -> Result<Record> {
        if !self.states[i].big.contains_key(&(round, "mono")) {
            self.push_big(i, round, "mono").await?;
        }
        let (repo, digest) = self.states[i].big[&(round, "mono")].clone();
        let len = self.sizes.blob;
        let path = format!("/v2/{repo}/blobs/{digest}");
        let t = &self.targets[i];
        let mut m = Meter::new(t.pid);
        if !ranged {
            let mut c = t.conn();
            c.warm().await?;
            m.start();
            let n = request(&mut c, Method::GET, &path, &[], StatusCode::OK).await?;
            if n != len {
                bail!("GET {path}: {n} bytes, not {len}");
            }
            let el = m.elapsed().as_micros() as u32;
            return Ok(m.finish(Record::new("pull", &t.name, round, 1), n, 1, &mut [el]));
        }
        let range = self.sizes.range;
        let count = len.div_ceil(range) as usize;
        let conns = self.sizes.range_conns;
        let path = Arc::new(path);
        let o = run_workers(t, conns, Stop::Count(count), &mut m, move |c, k| {
            let path = path.clone();
            Box::pin(async move {
                let a = k as u64 * range;
                let b = (a + range).min(len) - 1;
                let h = format!("bytes={a}-{b}");
                let n = request(
                    c,
                    Method::GET,
                    &path,
                    &[("range", &h)],
                    StatusCode::PARTIAL_CONTENT,
                )
                .await?;
                if n != b - a + 1 {
                    bail!("range {h}: {n} bytes");
                }
                Ok(n)
            })
        })
        .await?;
        let mut r = m.finish_outcome(Record::new("pull-ranged", &t.name, round, conns as u32), o);
        r.note
            .get_or_insert_with(|| format!("{count} ranges of {} MiB", range / MIB));
        Ok(r)
    }

    async fn small_push(&mut self, i: usize, w: &str, round: u32, conns: usize) -> Result<Record> {
        let (n, size) = (self.sizes.small_count, self.sizes.small_size);
        let s = seed(&[self.run_seed, round as u64, conns as u64, i as u64]);
        let blobs: Arc<Vec<(Bytes, String)>> = Arc::new(
            (0..n)
                .map(|k| {
                    let b = Bytes::from(random_bytes(seed(&[s, k as u64]), size));
                    let d = sha256_digest(&b);
                    (b, d)
                })
                .collect(),
        );
        let repo = Arc::new(self.repo(&format!("small-r{round}-c{conns}")));
        let t = &self.targets[i];
        let mut m = Meter::new(t.pid);
        let (b2, r2) = (blobs.clone(), repo.clone());
        let o = run_workers(t, conns, Stop::Count(n), &mut m, move |c, k| {
            let (blobs, repo) = (b2.clone(), r2.clone());
            Box::pin(async move {
                let (b, d) = &blobs[k];
                push_post_put(c, &repo, d, client::full(b.clone()), b.len() as u64).await?;
                Ok(b.len() as u64)
            })
        })
        .await?;
        let mut r = m.finish_outcome(Record::new(w, &t.name, round, conns as u32), o);
        r.note
            .get_or_insert_with(|| format!("{n} blobs of {size} bytes, POST + PUT ?digest= each"));
        self.states[i].small = Some(Arc::new(
            blobs
                .iter()
                .map(|(_, d)| format!("/v2/{repo}/blobs/{d}"))
                .collect(),
        ));
        Ok(r)
    }

    async fn small_read(
        &mut self,
        i: usize,
        w: &str,
        round: u32,
        conns: usize,
        get: bool,
    ) -> Result<Record> {
        if self.states[i].small.is_none() {
            self.small_push(i, "small-push-c8", round, 8).await?;
        }
        let paths = self.states[i].small.clone().expect("pushed above");
        let t = &self.targets[i];
        let mut m = Meter::new(t.pid);
        let method = if get { Method::GET } else { Method::HEAD };
        let o = run_workers(
            t,
            conns,
            Stop::For(self.sizes.duration),
            &mut m,
            move |c, k| {
                let (paths, method) = (paths.clone(), method.clone());
                Box::pin(async move {
                    request(c, method, &paths[k % paths.len()], &[], StatusCode::OK).await
                })
            },
        )
        .await?;
        Ok(m.finish_outcome(Record::new(w, &t.name, round, conns as u32), o))
    }

    /// Pushes a small image (config, one layer, manifest tagged `v1`) once per target.
    async fn ensure_image(&mut self, i: usize) -> Result<(String, String, u64)> {
        if let Some(img) = &self.states[i].image {
            return Ok(img.clone());
        }
        let repo = self.repo("image");
        self.targets[i].authorize(&repo).await?;
        let t = &self.targets[i];
        let mut c = t.conn();
        let config = Bytes::from_static(TINY_CONFIG);
        let layer = Bytes::from(random_bytes(seed(&[self.run_seed, 99]), 4096));
        let (cd, ld) = (sha256_digest(&config), sha256_digest(&layer));
        push_post_put(
            &mut c,
            &repo,
            &cd,
            client::full(config.clone()),
            config.len() as u64,
        )
        .await?;
        push_post_put(
            &mut c,
            &repo,
            &ld,
            client::full(layer.clone()),
            layer.len() as u64,
        )
        .await?;
        let manifest = Bytes::from(serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": cd, "size": config.len()},
            "layers": [{"mediaType": crate::layout::LAYER_MEDIA_TYPE, "digest": ld, "size": layer.len()}],
        }))?);
        let md = sha256_digest(&manifest);
        put_manifest(&mut c, &repo, "v1", MANIFEST_MEDIA_TYPE, manifest.clone()).await?;
        let img = (repo, md, manifest.len() as u64);
        self.states[i].image = Some(img.clone());
        Ok(img)
    }

    async fn manifest_get(
        &mut self,
        i: usize,
        w: &str,
        round: u32,
        conns: usize,
        by_tag: bool,
    ) -> Result<Record> {
        let (repo, digest, size) = self.ensure_image(i).await?;
        // A fresh token (untimed): they expire within minutes.
        self.targets[i].authorize(&repo).await?;
        let reference = if by_tag { "v1" } else { digest.as_str() };
        let path = Arc::new(format!("/v2/{repo}/manifests/{reference}"));
        let t = &self.targets[i];
        let mut m = Meter::new(t.pid);
        let o = run_workers(
            t,
            conns,
            Stop::For(self.sizes.duration),
            &mut m,
            move |c, _| {
                let path = path.clone();
                Box::pin(async move {
                    let n = request(
                        c,
                        Method::GET,
                        &path,
                        &[("accept", ACCEPT_MANIFESTS)],
                        StatusCode::OK,
                    )
                    .await?;
                    if n != size {
                        bail!("manifest of {n} bytes, not {size}");
                    }
                    Ok(n)
                })
            },
        )
        .await?;
        Ok(m.finish_outcome(Record::new(w, &t.name, round, conns as u32), o))
    }

    /// Seeds the listings' data in every target at once (before round 1): seeding is
    /// not compared, and done in parallel it takes half the time.
    async fn prepare(&mut self, workloads: &[String]) -> Result<()> {
        let catalog = workloads.iter().any(|w| w.starts_with("catalog-"));
        let tags = workloads.iter().any(|w| w.starts_with("tags-"));
        if !catalog && !tags {
            return Ok(());
        }
        let s = &self.sizes;
        let mut jobs: Vec<futures_util::future::BoxFuture<'_, Result<Option<Record>>>> = Vec::new();
        let runs = |t: &Target, prefix: &str| {
            t.only.is_empty() || t.only.iter().any(|w| w.starts_with(prefix))
        };
        for t in &self.targets {
            if catalog && runs(t, "catalog-") {
                jobs.push(Box::pin(seed_catalog(t, s.catalog_repos, s.seed_conns)));
            }
            if tags && runs(t, "tags-") {
                jobs.push(Box::pin(seed_tags(t, s.catalog_tags, s.seed_conns)));
            }
        }
        eprintln!("== seeding the listings in every registry at once");
        let results = futures_util::future::join_all(jobs).await;
        for r in results {
            if let Some(mut r) = r? {
                if self.targets.len() > 1 {
                    r.note = r
                        .note
                        .map(|n| format!("{n}; all registries seeded at once"));
                }
                self.emit(&r)?;
            }
        }
        for (t, st) in self.targets.iter().zip(&mut self.states) {
            st.catalog_seeded |= catalog && runs(t, "catalog-");
            st.tags_seeded |= tags && runs(t, "tags-");
        }
        Ok(())
    }

    async fn ensure_catalog(&mut self, i: usize) -> Result<()> {
        if !self.states[i].catalog_seeded {
            let s = &self.sizes;
            if let Some(r) = seed_catalog(&self.targets[i], s.catalog_repos, s.seed_conns).await? {
                self.emit(&r)?;
            }
            self.states[i].catalog_seeded = true;
        }
        Ok(())
    }

    async fn ensure_tags(&mut self, i: usize) -> Result<()> {
        if !self.states[i].tags_seeded {
            let s = &self.sizes;
            if let Some(r) = seed_tags(&self.targets[i], s.catalog_tags, s.seed_conns).await? {
                self.emit(&r)?;
            }
            self.states[i].tags_seeded = true;
        }
        Ok(())
    }

    /// `gc`: seeds `gc_images` images of `gc_blobs` distinct tiny blobs each (spread
    /// over 100 repositories), deletes every other image by digest (so half the blobs
    /// become garbage), then times the target's own collection command: Berth's
    /// `berth gc` online, beside the serving registry; distribution's
    /// `garbage-collect`, which its documentation wants run with the registry stopped
    /// or read-only (nothing writes meanwhile here). Afterwards a sample of kept images
    /// must still pull and a sample of deleted blobs must be gone.
    async fn gc(&mut self, i: usize, round: u32) -> Result<Record> {
        let (n, per) = (self.sizes.gc_images, self.sizes.gc_blobs);
        let t = &self.targets[i];
        let cmd = t.gc_cmd.clone().expect("checked by the caller");
        let single = t.single_post;
        let g = GcSeed {
            run: self.run_id.as_str().into(),
            per,
        };
        eprintln!("  seeding {n} images of {per} blobs in {}", t.name);
        let mut m = Meter::new(t.pid);
        let g1 = g.clone();
        let o = run_workers(
            t,
            self.sizes.seed_conns,
            Stop::Count(n),
            &mut m,
            move |c, k| {
                let g = g1.clone();
                Box::pin(async move {
                    let repo = g.repo(k);
                    for j in 0..g.per {
                        let (b, d) = g.blob(k, j);
                        let len = b.len() as u64;
                        if single {
                            push_single_post(c, &repo, &d, client::full(b), len).await?;
                        } else {
                            push_post_put(c, &repo, &d, client::full(b), len).await?;
                        }
                    }
                    put_manifest(
                        c,
                        &repo,
                        &format!("i{k:07}"),
                        MANIFEST_MEDIA_TYPE,
                        g.manifest(k),
                    )
                    .await?;
                    Ok(0)
                })
            },
        )
        .await?;
        let mut seeded = m.finish_outcome(
            Record::new("seed-gc", &t.name, 0, self.sizes.seed_conns as u32),
            o,
        );
        seeded.note = Some(format!(
            "{n} images of {per} blobs: blob pushes and a manifest PUT each"
        ));
        self.emit(&seeded)?;

        let t = &self.targets[i];
        eprintln!("  deleting every other image in {}", t.name);
        let mut m = Meter::new(t.pid);
        let g2 = g.clone();
        let o = run_workers(
            t,
            self.sizes.seed_conns,
            Stop::Count(n / 2),
            &mut m,
            move |c, k| {
                let g = g2.clone();
                Box::pin(async move {
                    let k = 2 * k + 1;
                    let d = sha256_digest(&g.manifest(k));
                    request(
                        c,
                        Method::DELETE,
                        &format!("/v2/{}/manifests/{d}", g.repo(k)),
                        &[],
                        StatusCode::ACCEPTED,
                    )
                    .await?;
                    Ok(0)
                })
            },
        )
        .await?;
        let mut deleted = m.finish_outcome(
            Record::new("gc-delete", &t.name, 0, self.sizes.seed_conns as u32),
            o,
        );
        deleted.note = Some(format!("{} manifest DELETEs by digest", n / 2));
        self.emit(&deleted)?;

        let t = &self.targets[i];
        eprintln!("  collecting garbage in {}: {cmd}", t.name);
        let mut m = Meter::new(t.pid);
        m.start();
        let started = std::time::Instant::now();
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .await?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "{cmd}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        // Kept images still pull whole (a failure is an error: data lost); deleted
        // images' blobs should be gone (noted: a registry may keep answering from a
        // cache until it restarts).
        let mut c = t.conn();
        let (mut errors, mut lingering, mut sampled) = (0u64, 0u64, 0u64);
        // An odd step samples kept (even) and deleted (odd) images alike.
        for k in (0..n).step_by((n / 50).max(1) | 1) {
            let (_, d) = g.blob(k, per - 1);
            let repo = g.repo(k);
            let resp = c
                .send(
                    Method::HEAD,
                    &format!("/v2/{repo}/blobs/{d}"),
                    &[],
                    client::empty(),
                )
                .await?;
            let status = client::drain(resp).await?.0;
            if k % 2 == 0 && status != StatusCode::OK {
                errors += 1;
                eprintln!("  gc check: a kept image's blob {repo}@{d} answers {status}");
            } else if k % 2 == 1 {
                sampled += 1;
                lingering += u64::from(status == StatusCode::OK);
            }
        }
        let blobs = (n * per) as u64;
        let mut lat = vec![took.as_micros().min(u32::MAX as u128) as u32];
        let mut r = m.finish(Record::new("gc", &t.name, round, 1), 0, blobs, &mut lat);
        r.errors = errors;
        // The collector may be another process (berth gc, garbage-collect): the
        // server's own CPU and memory say nothing about it.
        r.server_cpu_s = None;
        r.rss_peak_kib = None;
        let per_million = took.as_secs_f64() * 1e6 / blobs as f64;
        r.note = Some(format!(
            "{blobs} blobs in {n} images, half unreferenced; {:.1} s, {per_million:.0} s per million blobs; ops = blobs in the registry; deleted blobs still served after: {lingering}/{sampled}",
            took.as_secs_f64()
        ));
        Ok(r)
    }

    /// Whether target `i` answers `/` with an HTML page (Berth's UI; not distribution).
    async fn has_ui(&mut self, i: usize) -> bool {
        if let Some(ui) = self.states[i].ui {
            return ui;
        }
        let mut c = self.targets[i].conn();
        let ui = match c.fetch(Method::GET, "/", &[], client::empty()).await {
            Ok((status, headers, _)) => {
                status == StatusCode::OK
                    && headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/html"))
            }
            Err(_) => false,
        };
        self.states[i].ui = Some(ui);
        ui
    }

    /// A web UI page over the seeded listings (the registry without authentication:
    /// every repository is visible, as to an admin). One connection, like the listings.
    async fn ui_page(&mut self, i: usize, w: &str, round: u32) -> Result<Record> {
        let path = match w {
            "ui-repository" => {
                self.ensure_tags(i).await?;
                format!("/repositories/{TAGS_REPO}")
            }
            _ => {
                self.ensure_catalog(i).await?;
                let mid = self.sizes.catalog_repos / 2;
                match w {
                    "ui-images-first" => "/".to_string(),
                    "ui-images-deep" => format!("/?last=cat%2Fr{mid:06}"),
                    // A substring matching one name in ten thousand: a scan, not a seek.
                    "ui-search" => format!("/?q=r{:04}", mid / 100),
                    _ => "/admin".to_string(),
                }
            }
        };
        let t = &self.targets[i];
        let mut c = t.conn();
        let (status, _, body) = c.fetch(Method::GET, &path, &[], client::empty()).await?;
        if status != StatusCode::OK {
            bail!("GET {path}: {status}");
        }
        let rows = String::from_utf8_lossy(&body)
            .matches("<tr")
            .count()
            .saturating_sub(1);
        let mut m = Meter::new(t.pid);
        let p = Arc::new(path.clone());
        let o = run_workers(t, 1, Stop::For(self.sizes.duration), &mut m, move |c, _| {
            let p = p.clone();
            Box::pin(async move { request(c, Method::GET, &p, &[], StatusCode::OK).await })
        })
        .await?;
        let mut r = m.finish_outcome(Record::new(w, &t.name, round, 1), o);
        r.note.get_or_insert_with(|| {
            format!(
                "GET {path}: {} KiB of HTML, {rows} table rows; {} repositories, {} tags seeded",
                body.len() / 1024,
                self.sizes.catalog_repos,
                self.sizes.catalog_tags
            )
        });
        Ok(r)
    }

    async fn listing(&mut self, i: usize, w: &str, round: u32) -> Result<Record> {
        let page = self.sizes.page;
        let path = match w {
            "catalog-first" | "catalog-deep" => {
                self.ensure_catalog(i).await?;
                let mid = self.sizes.catalog_repos / 2;
                if w == "catalog-first" {
                    format!("/v2/_catalog?n={page}")
                } else {
                    format!("/v2/_catalog?n={page}&last=cat/r{mid:06}")
                }
            }
            _ => {
                self.ensure_tags(i).await?;
                let mid = self.sizes.catalog_tags / 2;
                if w == "tags-first" {
                    format!("/v2/{TAGS_REPO}/tags/list?n={page}")
                } else {
                    format!("/v2/{TAGS_REPO}/tags/list?n={page}&last=t{mid:05}")
                }
            }
        };
        let t = &self.targets[i];
        // What one answer holds (untimed): registries that ignore `n` send everything.
        let mut c = t.conn();
        let (status, headers, body) = c.fetch(Method::GET, &path, &[], client::empty()).await?;
        if status != StatusCode::OK {
            bail!("GET {path}: {status}");
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let items = ["repositories", "tags"]
            .iter()
            .find_map(|k| v.get(k)?.as_array().map(|a| a.len()))
            .unwrap_or(0);
        let link = headers.contains_key("link");
        let mut m = Meter::new(t.pid);
        let p = Arc::new(path);
        let o = run_workers(t, 1, Stop::For(self.sizes.duration), &mut m, move |c, _| {
            let p = p.clone();
            Box::pin(async move { request(c, Method::GET, &p, &[], StatusCode::OK).await })
        })
        .await?;
        let mut r = m.finish_outcome(Record::new(w, &t.name, round, 1), o);
        r.note.get_or_insert_with(|| {
            format!(
                "{items} items per answer (n={page}){}",
                if link { ", Link: next" } else { "" }
            )
        });
        Ok(r)
    }

    /// An environment where skopeo reads nothing of the machine's or user's
    /// configuration (policy, registries, auth, temp dir).
    fn skopeo_env(&mut self) -> Result<Vec<(String, String)>> {
        if let Some(e) = &self.skopeo_env {
            return Ok(e.clone());
        }
        let base = self.work.join("skopeo");
        for d in ["home", "tmp"] {
            std::fs::create_dir_all(base.join(d))?;
        }
        std::fs::write(
            base.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )?;
        std::fs::write(
            base.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )?;
        std::fs::write(base.join("auth.json"), r#"{"auths":{}}"#)?;
        let p = |s: &str| base.join(s).display().to_string();
        let env = vec![
            ("HOME".to_string(), p("home")),
            ("TMPDIR".to_string(), p("tmp")),
            (
                "CONTAINERS_REGISTRIES_CONF".to_string(),
                p("registries.conf"),
            ),
            ("REGISTRY_AUTH_FILE".to_string(), p("auth.json")),
            ("BENCH_POLICY".to_string(), p("policy.json")),
        ];
        self.skopeo_env = Some(env.clone());
        Ok(env)
    }

    async fn skopeo(&mut self, args: &[String]) -> Result<()> {
        let env = self.skopeo_env()?;
        let policy = env
            .iter()
            .find(|(k, _)| k == "BENCH_POLICY")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let out = tokio::process::Command::new("skopeo")
            .arg("--policy")
            .arg(policy)
            .args(args)
            .envs(env)
            .output()
            .await
            .context("running skopeo (is it installed?)")?;
        if !out.status.success() {
            bail!(
                "skopeo {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    async fn skopeo_push(&mut self, i: usize, round: u32) -> Result<Record> {
        let (layers, size) = (self.sizes.skopeo_layers, self.sizes.skopeo_layer_size);
        let dir = self
            .work
            .join(format!("layout-{}-r{round}", self.targets[i].name));
        let _ = std::fs::remove_dir_all(&dir);
        let image_seed = seed(&[self.run_seed, round as u64, i as u64, 5]);
        let d2 = dir.clone();
        let layout =
            tokio::task::spawn_blocking(move || make_layout(&d2, layers, size, image_seed, "v1"))
                .await??;
        let repo = self.repo(&format!("skopeo-r{round}"));
        let dest = format!("docker://{}/{repo}:v1", self.targets[i].addr);
        let args: Vec<String> = [
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", dir.display()),
            &dest,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.skopeo_env()?;
        let mut m = Meter::new(self.targets[i].pid);
        m.start();
        let res = self.skopeo(&args).await;
        let el = m.elapsed().as_micros() as u32;
        let _ = std::fs::remove_dir_all(&dir);
        res?;
        let t = &self.targets[i];
        let mut r = m.finish(
            Record::new("skopeo-push", &t.name, round, 1),
            layout.bytes,
            1,
            &mut [el],
        );
        r.note = Some(format!(
            "skopeo copy oci: -> docker://, {layers} layers of {} MiB",
            size / MIB
        ));
        self.states[i].skopeo = Some((round, repo, layout.bytes, layout.digests));
        Ok(r)
    }

    async fn skopeo_pull(&mut self, i: usize, round: u32) -> Result<Record> {
        if !matches!(&self.states[i].skopeo, Some((r, ..)) if *r == round) {
            self.skopeo_push(i, round).await?;
        }
        let (_, repo, bytes, _) = self.states[i].skopeo.clone().expect("pushed above");
        let dir = self
            .work
            .join(format!("pulled-{}-r{round}", self.targets[i].name));
        let _ = std::fs::remove_dir_all(&dir);
        let args: Vec<String> = [
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{}/{repo}:v1", self.targets[i].addr),
            &format!("oci:{}:v1", dir.display()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.skopeo_env()?;
        let mut m = Meter::new(self.targets[i].pid);
        m.start();
        let res = self.skopeo(&args).await;
        let el = m.elapsed().as_micros() as u32;
        let _ = std::fs::remove_dir_all(&dir);
        res?;
        let t = &self.targets[i];
        let mut r = m.finish(
            Record::new("skopeo-pull", &t.name, round, 1),
            bytes,
            1,
            &mut [el],
        );
        r.note = Some("skopeo copy docker:// -> oci:".into());
        Ok(r)
    }
}

const TINY_CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;

/// 100,000 repositories (by default), each created by one cross-repository mount of the
/// same tiny blob: the cheapest way through the API to make a repository that both
/// registries list. Skipped when the last one is already there.
async fn seed_catalog(t: &Target, n: usize, conns: usize) -> Result<Option<Record>> {
    let mut c = t.conn();
    let blob = Bytes::from_static(CATALOG_BLOB);
    let d = Arc::new(sha256_digest(&blob));
    if !has_blob(&mut c, CATALOG_SRC, &d).await? {
        push_post_put(
            &mut c,
            CATALOG_SRC,
            &d,
            client::full(blob),
            CATALOG_BLOB.len() as u64,
        )
        .await?;
    }
    if has_blob(&mut c, &format!("cat/r{:06}", n - 1), &d).await? {
        return Ok(None);
    }
    eprintln!(
        "  seeding {n} repositories in {} ({conns} connections)",
        t.name
    );
    let mut m = Meter::new(t.pid);
    let o = run_workers(t, conns, Stop::Count(n), &mut m, move |c, k| {
        let d = d.clone();
        Box::pin(async move {
            mount(c, &format!("cat/r{k:06}"), CATALOG_SRC, &d).await?;
            Ok(0)
        })
    })
    .await?;
    let mut r = m.finish_outcome(Record::new("seed-mounts", &t.name, 0, conns as u32), o);
    r.note
        .get_or_insert_with(|| format!("{n} cross-repository mounts, one new repository each"));
    Ok(Some(r))
}

/// One repository with 10,000 tags (by default) of one tiny manifest.
async fn seed_tags(t: &Target, n: usize, conns: usize) -> Result<Option<Record>> {
    let mut c = t.conn();
    let config = Bytes::from_static(TINY_CONFIG);
    let cd = sha256_digest(&config);
    let manifest = Bytes::from(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": cd, "size": config.len()},
        "layers": [],
    }))?);
    let last = format!("/v2/{TAGS_REPO}/manifests/t{:05}", n - 1);
    let resp = c
        .send(
            Method::HEAD,
            &last,
            &[("accept", ACCEPT_MANIFESTS)],
            client::empty(),
        )
        .await?;
    if client::drain(resp).await?.0 == StatusCode::OK {
        return Ok(None);
    }
    if !has_blob(&mut c, TAGS_REPO, &cd).await? {
        push_post_put(
            &mut c,
            TAGS_REPO,
            &cd,
            client::full(config.clone()),
            config.len() as u64,
        )
        .await?;
    }
    eprintln!("  seeding {n} tags in {} ({conns} connections)", t.name);
    let mut m = Meter::new(t.pid);
    let o = run_workers(t, conns, Stop::Count(n), &mut m, move |c, k| {
        let manifest = manifest.clone();
        Box::pin(async move {
            put_manifest(
                c,
                TAGS_REPO,
                &format!("t{k:05}"),
                MANIFEST_MEDIA_TYPE,
                manifest,
            )
            .await?;
            Ok(0)
        })
    })
    .await?;
    let mut r = m.finish_outcome(Record::new("seed-tags", &t.name, 0, conns as u32), o);
    r.note
        .get_or_insert_with(|| format!("{n} manifest PUTs by tag (same manifest)"));
    Ok(Some(r))
}
