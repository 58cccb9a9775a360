//! `berth import-distribution DIR`: imports a registry:2 (CNCF distribution) filesystem
//! storage directory — repositories, tags, manifests, blobs, digests verified — with a
//! progress bar on a terminal. Idempotent; safe while the server runs.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use super::Cli;
use crate::app::Stores;
use crate::human::bytes;
use crate::import::{scan, v2_root, Importer, Progress, Report};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// distribution's storage `rootdirectory` (the one holding docker/registry/v2).
    pub dir: PathBuf,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let config = cli.config()?;
    let v2 = v2_root(&args.dir)?;
    let stores = Stores::open(&config).await?;
    let importer = Importer {
        meta: stores.meta.clone(),
        blobs: Stores::open_blobs(&config).await?,
        manifest_max_bytes: config.limits.manifest_max_bytes,
        v2: v2.clone(),
    };
    let mut report = Report::default();
    let repos = scan(&v2, &mut report.problems)?;
    let tty = std::io::stderr().is_terminal();
    let blobs: usize = repos
        .iter()
        .map(|r| r.layers.len() + r.revisions.len())
        .sum();
    let progress = |p: Progress| {
        let mut err = std::io::stderr();
        let _ = match p {
            Progress::Scanned {
                repositories,
                blobs,
            } => writeln!(
                err,
                "importing {repositories} repositories ({blobs} blob links) from {}",
                v2.display()
            ),
            Progress::Blob {
                done,
                total,
                bytes: b,
            } if tty => {
                let width = 30;
                let filled = (done * width).checked_div(total).unwrap_or(width);
                write!(
                    err,
                    "\r\x1b[2K[{}{}] {done}/{total} blobs, {} copied",
                    "#".repeat(filled),
                    "-".repeat(width - filled),
                    bytes(b)
                )
            }
            Progress::Blob { .. } => Ok(()),
            Progress::Repository(name) if !tty => writeln!(err, "{name}"),
            Progress::Repository(_) => Ok(()),
        };
    };
    progress(Progress::Scanned {
        repositories: repos.len(),
        blobs,
    });
    importer.run(&repos, &mut report, &progress).await?;
    if tty {
        eprintln!();
    }
    println!(
        "imported {} repositories, {} tags, {} manifests; copied {} blobs ({}), {} already present; {} tags already present",
        report.repositories,
        report.tags,
        report.manifests,
        report.blobs_copied,
        bytes(report.bytes_copied),
        report.blobs_present,
        report.tags_present
    );
    for p in &report.problems {
        println!("problem: {p}");
    }
    if !report.problems.is_empty() {
        anyhow::bail!(
            "{} problems (listed above); what could be imported was",
            report.problems.len()
        );
    }
    Ok(())
}
