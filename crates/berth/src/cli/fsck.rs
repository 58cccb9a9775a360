//! `berth fsck [--repair]`: verifies every blob's digest and size and every reference
//! in the metadata; reports what is wrong, and with `--repair` quarantines it. Exits 1
//! when it found problems (and did not repair them). Safe while the server runs.

use std::io::{IsTerminal, Write};

use super::Cli;
use crate::app::Stores;
use crate::fsck::{BlobProblem, Fsck, Progress};
use crate::human::bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Quarantine corrupt blobs, forget missing ones, and delete the images they
    /// broke (listed), so that clients push them again.
    #[arg(long)]
    pub repair: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let config = cli.config()?;
    let stores = Stores::open(&config).await?;
    let fsck = Fsck {
        meta: stores.gc.clone(),
        blobs: Stores::open_blobs(&config).await?,
    };
    let tty = std::io::stderr().is_terminal();
    let progress = |p: Progress| {
        let mut err = std::io::stderr();
        let _ = match p {
            Progress::Phase(phase) if tty => write!(err, "\r\x1b[2K{phase}…"),
            Progress::Phase(phase) => writeln!(err, "{phase}"),
            Progress::Verified { done, total } if tty && (done % 64 == 0 || done == total) => {
                write!(err, "\r\x1b[2Kverifying blobs: {done}/{total}")
            }
            Progress::Verified { .. } => Ok(()),
        };
    };
    let report = fsck.run(args.repair, &progress).await?;
    if tty {
        eprint!("\r\x1b[2K");
    }
    println!(
        "checked {} blob rows and {} files ({}); {} files no metadata refers to (garbage collection removes them)",
        report.rows_checked,
        report.blobs_checked,
        bytes(report.bytes_checked),
        report.unreferenced_files
    );
    for f in &report.findings {
        let what = match &f.problem {
            BlobProblem::Missing => "MISSING  the file is gone".to_string(),
            BlobProblem::Size { recorded, actual } => {
                format!("SIZE     recorded {recorded} bytes, the file has {actual}")
            }
            BlobProblem::Corrupt { actual } => format!("CORRUPT  the content hashes to {actual}"),
        };
        println!("{}: {what}", f.digest);
        for u in &f.users {
            println!("    used by {u}");
        }
    }
    for d in &report.dangling {
        println!(
            "DANGLING {}@{} references {} {}, which the registry lacks",
            d.repo,
            d.manifest,
            if d.is_manifest { "manifest" } else { "blob" },
            d.child
        );
    }
    if report.clean() {
        println!("fsck: clean");
        return Ok(());
    }
    let problems = report.findings.len() + report.dangling.len();
    if args.repair {
        println!(
            "repaired: {} blobs quarantined (under the blob store's quarantine/), {} forgotten",
            report.quarantined, report.forgotten
        );
        for d in &report.dropped {
            println!("deleted broken image {d}: push it again");
        }
        return Ok(());
    }
    anyhow::bail!("fsck found {problems} problems; `berth fsck --repair` quarantines them")
}
