//! `berth retention add|ls|rm`: cleanup rules the garbage collector applies at every
//! run; `berth gc --dry-run` previews what they delete.

use anyhow::bail;
use clap::Subcommand;

use super::{audit, Cli};
use crate::app::Stores;
use crate::meta::gc::RetentionRule;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a rule for repositories matching a pattern (`alice/*`, `web/site`, `*`).
    Add {
        /// Repositories the rule applies to (glob: `*` any characters, `?` one).
        #[arg(long = "repos", value_name = "PATTERN")]
        repositories: String,
        /// Which tags --keep-tags counts (glob; default every tag).
        #[arg(long, value_name = "PATTERN", default_value = "*")]
        tags: String,
        /// Keep only the newest N matching tags per repository.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
        keep_tags: Option<i32>,
        /// Delete untagged images older than N days.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
        untagged_days: Option<i32>,
    },
    /// List the rules.
    Ls,
    /// Remove rule ID.
    Rm { id: i64 },
}

pub async fn run(cli: &Cli, cmd: &Command) -> anyhow::Result<()> {
    let config = cli.config()?;
    let stores = Stores::open(&config).await?;
    match cmd {
        Command::Add {
            repositories,
            tags,
            keep_tags,
            untagged_days,
        } => {
            let rule = RetentionRule {
                id: 0,
                repositories: repositories.clone(),
                tags: tags.clone(),
                keep_tags: *keep_tags,
                untagged_days: *untagged_days,
            };
            if let Err(e) = rule.check() {
                bail!("{e}");
            }
            if keep_tags.is_none() && untagged_days.is_none() {
                bail!("a rule needs --keep-tags, --untagged-days or both");
            }
            let id = stores.gc.retention_add(&rule).await?;
            audit(
                stores.accounts.as_ref(),
                "retention_add",
                repositories,
                Some(describe(&rule)),
            )
            .await?;
            println!("rule {id}: {}", describe(&rule));
            println!("preview what it deletes with `berth gc --dry-run`");
        }
        Command::Ls => {
            for r in stores.gc.retention_rules().await? {
                println!("{:>4}  {}", r.id, describe(&r));
            }
        }
        Command::Rm { id } => {
            if !stores.gc.retention_remove(*id).await? {
                bail!("there is no retention rule {id}");
            }
            audit(
                stores.accounts.as_ref(),
                "retention_rm",
                &id.to_string(),
                None,
            )
            .await?;
            println!("removed rule {id}");
        }
    }
    Ok(())
}

/// "alice/*: keep the newest 10 tags matching v*; delete untagged images after 7 days"
pub fn describe(r: &RetentionRule) -> String {
    let mut parts = Vec::new();
    if let Some(n) = r.keep_tags {
        if r.tags == "*" {
            parts.push(format!("keep the newest {n} tags"));
        } else {
            parts.push(format!("keep the newest {n} tags matching {}", r.tags));
        }
    }
    if let Some(d) = r.untagged_days {
        parts.push(format!("delete untagged images after {d} days"));
    }
    format!("{}: {}", r.repositories, parts.join("; "))
}
