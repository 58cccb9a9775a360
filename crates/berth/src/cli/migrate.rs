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
    let source = Stores::open_blobs_as(&config, from).await?;
    let dest = Stores::open_blobs_as(&config, &args.to).await?;
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

#[derive(Debug, clap::Args)]
pub struct MetadataArgs {
    /// The PostgreSQL database to copy into (empty; created tables are fine), e.g.
    /// postgres://berth:PASSWORD@db:5432/berth [default: metadata.url].
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
}

pub async fn metadata(cli: &Cli, args: &MetadataArgs) -> anyhow::Result<()> {
    let config = cli.config()?;
    let url = match &args.to {
        Some(u) => u.clone(),
        None if !config.metadata.url.is_empty() => config.metadata.url.clone(),
        None => bail!("name the PostgreSQL database: --to postgres://… (or set metadata.url)"),
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!(
            "--to must be a postgres:// URL, not {}",
            url.split(':').next().unwrap_or("")
        );
    }
    let sqlite = config.storage.data_dir.join("berth.db");
    let report =
        crate::migrate::metadata::sqlite_to_postgres(&sqlite, &url, &|table: &str, n: u64| {
            eprintln!("{table}: {n} rows");
        })
        .await?;
    let rows: u64 = report.tables.iter().map(|(_, n)| n).sum();
    println!(
        "copied {rows} rows of {} tables from {} into {}",
        report.tables.len(),
        sqlite.display(),
        crate::meta::postgres::describe(&url)
    );
    if config.metadata.url != url {
        println!("set metadata.url (BERTH_METADATA__URL) to that database to serve from it");
    }
    Ok(())
}
