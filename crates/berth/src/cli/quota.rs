//! `berth quota set|rm|ls`: storage quotas per namespace. A push that would take a
//! namespace past its quota is refused before its data is stored; deleting is always
//! allowed. Safe while the server runs (it reads the quota at every push).

use clap::Subcommand;

use super::{audit, check_name, Cli};
use crate::app::Stores;
use crate::config::parse_size;
use crate::human::bytes;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Limit NAMESPACE to SIZE (e.g. 500MB, 10GiB; each blob counted once per namespace).
    Set {
        namespace: String,
        #[arg(value_parser = parse_size)]
        size: u64,
    },
    /// Remove NAMESPACE's quota.
    Rm { namespace: String },
    /// Storage used per namespace, with quotas.
    Ls,
}

pub async fn run(cli: &Cli, cmd: &Command) -> anyhow::Result<()> {
    let config = cli.config()?;
    let stores = Stores::open(&config).await?;
    match cmd {
        Command::Set { namespace, size } => {
            check_name("namespace", namespace)?;
            stores.gc.quota_set(namespace, Some(*size)).await?;
            audit(
                stores.accounts.as_ref(),
                "quota_set",
                namespace,
                Some(size.to_string()),
            )
            .await?;
            let (used, _) = stores.gc.namespace_bytes(namespace, None).await?;
            println!(
                "quota of {namespace}: {} (uses {} now{})",
                bytes(*size),
                bytes(used),
                if used > *size {
                    "; over quota: new pushes are refused until images are deleted and collected"
                } else {
                    ""
                }
            );
        }
        Command::Rm { namespace } => {
            check_name("namespace", namespace)?;
            stores.gc.quota_set(namespace, None).await?;
            audit(stores.accounts.as_ref(), "quota_rm", namespace, None).await?;
            println!("{namespace} has no quota now");
        }
        Command::Ls => {
            let usage = stores.gc.usage().await?;
            println!(
                "{:<32} {:>12} {:>12} {:>6}",
                "NAMESPACE", "USED", "QUOTA", "REPOS"
            );
            for n in usage.namespaces {
                println!(
                    "{:<32} {:>12} {:>12} {:>6}",
                    n.namespace,
                    bytes(n.bytes),
                    n.quota.map(bytes).unwrap_or_else(|| "-".into()),
                    n.repositories
                );
            }
            println!(
                "total stored (each blob once): {}",
                bytes(usage.total_bytes)
            );
        }
    }
    Ok(())
}
