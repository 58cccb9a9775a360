//! `berth gc [--dry-run] [--grace-period DURATION]`: one collection, online — it works
//! while the server runs (one collector at a time across processes).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::Cli;
use crate::app::Stores;
use crate::config::parse_duration;
use crate::gc::{Collector, Options, Progress};
use crate::human::bytes;
use crate::meta::gc::Retained;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Report what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Spare everything pushed, mounted or referenced more recently than this
    /// (default: gc.grace_period).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub grace_period: Option<Duration>,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let config = cli.config()?;
    let stores = Stores::open(&config).await?;
    let collector = Collector {
        meta: stores.gc,
        blobs: Stores::open_blobs(&config).await?,
    };
    let opts = Options {
        dry_run: args.dry_run,
        grace: args.grace_period.unwrap_or(config.gc.grace_period.get()),
        untagged: config.gc.untagged,
        upload_expiry: config.gc.upload_expiry.get(),
        trigger: "cli",
    };
    let tty = std::io::stderr().is_terminal();
    let dry_run = args.dry_run;
    let progress = move |p: Progress| {
        let mut err = std::io::stderr();
        let _ = match p {
            Progress::Retained(r) => {
                // What the retention rules delete goes to stdout: it is the answer of a
                // dry run.
                let verb = if dry_run { "would delete" } else { "deleted" };
                if tty {
                    let _ = write!(err, "\r\x1b[2K");
                }
                match r {
                    Retained::Tag { repo, tag } => println!("retention: {verb} tag {repo}:{tag}"),
                    Retained::Manifest { repo, digest } => {
                        println!("retention: {verb} untagged image {repo}@{digest}")
                    }
                }
                Ok(())
            }
            Progress::Phase(phase) if tty => write!(err, "\r\x1b[2K{phase}…"),
            Progress::Phase(phase) => writeln!(err, "{phase}"),
            Progress::Blobs { done, total } if tty => write!(err, "\r\x1b[2Kblobs: {done}/{total}"),
            Progress::Blobs { .. } => Ok(()),
        };
    };
    let report = collector.run_once(&opts, &progress).await?;
    if tty {
        eprint!("\r\x1b[2K");
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    println!(
        "{verb} {} blobs ({}), {} manifests, {} tags; {} upload sessions expired",
        report.blobs_deleted,
        bytes(report.bytes_freed),
        report.manifests_deleted,
        report.tags_deleted,
        report.uploads_expired
    );
    Ok(())
}
