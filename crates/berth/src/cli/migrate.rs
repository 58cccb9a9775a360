//! `berth migrate-storage --to s3|fs`: copies every blob from the other store of the
//! configuration into the one named (the `[storage.s3]` settings and the data directory
//! say where each is), verifying each digest on the way. Resumable: a second run copies
//! only what is missing. Exits 1 if a blob could not be copied.

use std::io::{IsTerminal, Write};

use anyhow::bail;

use super::Cli;
use crate::app::Stores;
use crate::human::bytes;
use crate::migrate::storage::{copy_blobs, Progress};

#[derive(Debug, clap::Args)]
pub struct StorageArgs {
    /// The store to copy into: "s3" (from the filesystem store in the data directory)
    /// or "fs" (from the configured S3 bucket).
    #[arg(long, value_name = "BACKEND")]
    pub to: String,
    /// Blobs copied at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
}

pub async fn storage(cli: &Cli, args: &StorageArgs) -> anyhow::Result<()> {
    let config = cli.config()?;
    let from = match args.to.as_str() {
        "s3" => "fs",
        "fs" => "s3",
        other => bail!("--to must be \"s3\" or \"fs\", not {other:?}"),
    };
    let source = Stores::open_blobs_as(&config, from)?;
    let dest = Stores::open_blobs_as(&config, &args.to)?;
    let tty = std::io::stderr().is_terminal();
    let progress = |p: Progress| {
        if tty && (p.done.is_multiple_of(16) || p.done == p.total) {
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[2K{}/{} blobs, {} copied",
                p.done,
                p.total,
                bytes(p.bytes)
            );
        }
    };
    let report = copy_blobs(source, dest, args.jobs.into(), &progress).await?;
    if tty {
        eprint!("\r\x1b[2K");
    }
    println!(
        "{} blobs in the {from} store: {} copied ({}), {} already in the {} store",
        report.blobs,
        report.copied,
        bytes(report.copied_bytes),
        report.skipped,
        args.to
    );
    for (digest, why) in &report.failed {
        println!("{digest}: NOT COPIED: {why}");
    }
    if !report.failed.is_empty() {
        bail!(
            "{} blobs could not be copied; run again to retry them",
            report.failed.len()
        );
    }
    if config.storage.backend != args.to {
        println!(
            "set storage.backend = \"{}\" (BERTH_STORAGE__BACKEND={}) to serve from it",
            args.to, args.to
        );
    }
    Ok(())
}
