//! `berth-bench`: load generator and benchmark harness for OCI registries.
//!
//! `bench/run.sh` drives it: it starts Berth and the CNCF distribution registry, runs
//! `berth-bench run` against both (alternating, in rounds), measures start-up with
//! `berth-bench startup`, and renders everything with `berth-bench report`. Every
//! measurement is one JSON line. See `bench/README.md` for the method.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod chart;
mod client;
mod data;
mod layout;
mod limits;
mod record;
mod registry;
mod report;
mod runner;
mod startup;
mod workloads;

use record::Record;
use registry::Target;
use workloads::{Bench, Sizes};

#[derive(Parser)]
#[command(name = "berth-bench", about = "Benchmark OCI registries side by side")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run workloads against one or more registries, in alternating rounds; print one
    /// JSON line per measurement.
    Run(Box<RunArgs>),
    /// Start a registry, time its first answer to `GET /v2/`, read its idle RSS, stop it.
    Startup(StartupArgs),
    /// Render results as Markdown tables (standard output), and optionally as an SVG
    /// chart of the ratios and as one JSON array.
    Report(ReportArgs),
    /// List the workloads.
    List,
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
}

#[derive(clap::Args)]
struct RunArgs {
    /// NAME=http://HOST:PORT (or just the URL). Repeat: the first is the subject, the
    /// order alternates every round.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// NAME=PID of a target's server process, for peak RSS and CPU time.
    #[arg(long = "pid")]
    pids: Vec<String>,
    /// NAME=DIR of a target's data directory, to drop a round's large blobs afterwards.
    #[arg(long = "data-dir")]
    data_dirs: Vec<String>,
    /// NAME=USER:PASSWORD: the target requires auth; every request carries a bearer
    /// token from its token service (supported by the manifest workloads).
    #[arg(long = "auth")]
    auths: Vec<String>,
    /// NAME=W1,W2: run only these workloads on that target.
    #[arg(long = "only")]
    onlys: Vec<String>,
    /// NAME=COMMAND: how that target collects garbage (the `gc` workload times it,
    /// run with `sh -c`); targets without one skip `gc`.
    #[arg(long = "gc-cmd")]
    gc_cmds: Vec<String>,
    /// Images the `gc` workload seeds (each of --gc-blobs blobs); half are deleted.
    #[arg(long)]
    gc_images: Option<usize>,
    /// Blobs per image in the `gc` workload (a config and layers, all distinct).
    #[arg(long)]
    gc_blobs: Option<usize>,
    /// Comma-separated workloads, or all, machine, registry.
    #[arg(long, default_value = "all")]
    workloads: String,
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Smaller sizes for a smoke run (64 MiB blob, 200 small blobs, 0.5 s runs, 2,000
    /// repositories, 500 tags, 4 MiB skopeo layers).
    #[arg(long)]
    quick: bool,
    /// Scratch directory on the disk under test.
    #[arg(long, default_value = "/var/tmp/berth-bench")]
    work: PathBuf,
    /// Also append the JSON lines to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Size of the large blob, MiB.
    #[arg(long)]
    blob_mib: Option<u64>,
    /// PATCH chunk and range-read size, MiB.
    #[arg(long)]
    chunk_mib: Option<u64>,
    #[arg(long)]
    small_count: Option<usize>,
    /// Seconds each request-rate workload runs.
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long)]
    catalog_repos: Option<usize>,
    #[arg(long)]
    catalog_tags: Option<usize>,
    #[arg(long)]
    skopeo_layers: Option<usize>,
    #[arg(long)]
    skopeo_layer_mib: Option<u64>,
}

#[derive(clap::Args)]
struct StartupArgs {
    #[arg(long)]
    registry: String,
    /// Where it will answer: http://HOST:PORT
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1)]
    round: u32,
    /// Idle time before reading RSS, seconds.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    #[arg(long)]
    out: Option<PathBuf>,
    /// The server's stderr goes here.
    #[arg(long)]
    log: Option<PathBuf>,
    /// The command that starts the registry.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// JSON-lines files written by `run` and `startup` (or a JSON array written by
    /// `--json`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long, default_value = "berth")]
    subject: String,
    #[arg(long, default_value = "distribution")]
    baseline: String,
    /// Also write an SVG bar chart of the ratios here: one bar per comparison line, how
    /// many times better the subject is, on a log scale.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// A line under the chart's title (e.g. the date and the mode of the run).
    #[arg(long)]
    svg_caption: Option<String>,
    /// Also write every record here, as one JSON array.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn by_name<'a>(pairs: &'a [String], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn append(out: Option<&PathBuf>, r: &Record) -> Result<()> {
    let line = serde_json::to_string(r)?;
    println!("{line}");
    if let Some(p) = out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

/// The records of a file: JSON lines, or one JSON array (as written by `report --json`).
/// Each comes with its JSON text as read (for a JSON-lines file, the line itself, so that
/// `--json` copies the figures digit for digit).
fn read_records(f: &std::path::Path) -> Result<Vec<(Record, String)>> {
    let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
    if text.trim_start().starts_with('[') {
        let records: Vec<Record> =
            serde_json::from_str(&text).with_context(|| format!("{}", f.display()))?;
        let mut out = Vec::new();
        for r in records {
            let t = serde_json::to_string(&r)?;
            out.push((r, t));
        }
        return Ok(out);
    }
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let r = serde_json::from_str::<Record>(line)
            .with_context(|| format!("{}:{}", f.display(), n + 1))?;
        records.push((r, line.to_string()));
    }
    Ok(records)
}

/// JSON texts of records as one JSON array, a record per line (diffs stay readable).
fn json_array(texts: &[String]) -> String {
    let mut o = String::from("[\n");
    for (k, t) in texts.iter().enumerate() {
        o.push_str(t);
        o.push_str(if k + 1 < texts.len() { ",\n" } else { "\n" });
    }
    o.push_str("]\n");
    o
}

async fn run(a: RunArgs) -> Result<()> {
    let mut sizes = if a.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(v) = a.blob_mib {
        sizes.blob = v * data::MIB;
    }
    if let Some(v) = a.chunk_mib {
        sizes.chunk = v * data::MIB;
        sizes.range = v * data::MIB;
    }
    if let Some(v) = a.small_count {
        sizes.small_count = v;
    }
    if let Some(v) = a.duration {
        sizes.duration = Duration::from_secs_f64(v);
    }
    if let Some(v) = a.catalog_repos {
        sizes.catalog_repos = v.max(2);
    }
    if let Some(v) = a.catalog_tags {
        sizes.catalog_tags = v.max(2);
    }
    if let Some(v) = a.skopeo_layers {
        sizes.skopeo_layers = v;
    }
    if let Some(v) = a.gc_images {
        sizes.gc_images = v.max(2);
    }
    if let Some(v) = a.gc_blobs {
        sizes.gc_blobs = v.max(1);
    }
    if let Some(v) = a.skopeo_layer_mib {
        sizes.skopeo_layer_size = v * data::MIB;
    }
    let workloads = workloads::expand(&a.workloads)?;
    let mut targets = Vec::new();
    for spec in &a.targets {
        let mut t = Target::new(spec).await?;
        if let Some(pid) = by_name(&a.pids, &t.name) {
            t.pid = Some(pid.parse().with_context(|| format!("--pid {pid}"))?);
        }
        t.data_dir = by_name(&a.data_dirs, &t.name).map(PathBuf::from);
        t.creds = by_name(&a.auths, &t.name).map(String::from);
        t.gc_cmd = by_name(&a.gc_cmds, &t.name).map(String::from);
        if let Some(only) = by_name(&a.onlys, &t.name) {
            t.only = workloads::expand(only)?;
        }
        targets.push(t);
    }
    let mut names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() != targets.len() {
        bail!("targets need distinct names (NAME=URL)");
    }
    eprintln!("sizes: {sizes:?}");
    let mut bench = Bench::new(targets, sizes, a.work, a.out)?;
    bench.run(&workloads, a.rounds).await
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(*a)),
        Cmd::Startup(a) => {
            let r = startup::measure(
                &a.registry,
                &a.url,
                a.round,
                Duration::from_secs_f64(a.settle),
                &a.cmd,
                a.log.as_deref(),
            )?;
            eprintln!(
                "  r{} startup {:<13} {:.2} ms to first answer, idle RSS {:.1} MiB ({:.1} MiB anonymous)",
                r.round,
                r.registry,
                r.seconds * 1000.0,
                r.rss_kib.unwrap_or(0) as f64 / 1024.0,
                r.rss_anon_kib.unwrap_or(0) as f64 / 1024.0
            );
            append(a.out.as_ref(), &r)
        }
        Cmd::Report(a) => {
            let (mut records, mut texts) = (Vec::new(), Vec::new());
            for f in &a.files {
                for (r, t) in read_records(f)? {
                    records.push(r);
                    texts.push(t);
                }
            }
            print!("{}", report::render(&records, &a.subject, &a.baseline));
            if let Some(p) = &a.svg {
                let lines = report::lines(&records, &a.subject, &a.baseline);
                let svg = chart::svg(&lines, &a.subject, &a.baseline, a.svg_caption.as_deref());
                std::fs::write(p, svg).with_context(|| format!("writing {}", p.display()))?;
            }
            if let Some(p) = &a.json {
                std::fs::write(p, json_array(&texts))
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            Ok(())
        }
        Cmd::List => {
            println!("{}", report::known());
            println!("(-cN suffixes may be changed: small-get-c16, manifest-tag-c8, ...)");
            Ok(())
        }
        Cmd::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            Ok(())
        }
    }
}
