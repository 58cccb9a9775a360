//! The `berth` command line: one module per subcommand. Every subcommand accepts
//! `--config` and `--data-dir` (anywhere after its name) and acts on the same database
//! as a running server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

pub mod fsck;
pub mod gc;
pub mod import;
pub mod k8s;
pub mod migrate;
pub mod quota;
pub mod retention;
pub mod serve;
pub mod team;
pub mod token;
pub mod user;

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "A private container image registry")]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Data directory (blob store and SQLite database); overrides storage.data_dir.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry.
    Serve(serve::Args),
    /// Collect garbage now: unreferenced blobs, (by policy) unreachable manifests,
    /// abandoned uploads. Safe while the server runs.
    Gc(gc::Args),
    /// Verify every blob's digest and size and every reference in the metadata.
    Fsck(fsck::Args),
    /// Import a registry:2 (CNCF distribution) filesystem storage directory.
    ImportDistribution(import::Args),
    /// Copy every blob between the filesystem store and S3 (verified, resumable).
    MigrateStorage(migrate::StorageArgs),
    /// Copy the embedded SQLite metadata into an empty PostgreSQL database.
    MigrateMetadata(migrate::MetadataArgs),
    /// Manage users (a user owns the namespace of their name).
    #[command(subcommand)]
    User(user::Command),
    /// Manage teams (members share the namespace of the team's name).
    #[command(subcommand)]
    Team(team::Command),
    /// Manage access tokens for CI and robots.
    #[command(subcommand)]
    Token(token::Command),
    /// Storage quotas per namespace.
    #[command(subcommand)]
    Quota(quota::Command),
    /// Cleanup rules the garbage collector applies (keep the newest N tags, delete old
    /// untagged images).
    #[command(subcommand)]
    Retention(retention::Command),
    /// A development registry in the current kube context's cluster (DevSpace's
    /// `localRegistry` settings).
    K8s(k8s::Args),
}

impl Cli {
    /// The configuration for a maintenance command (no server flags).
    pub fn config(&self) -> anyhow::Result<Config> {
        Config::load(
            self.config.as_deref(),
            &Overrides {
                data_dir: self.data_dir.clone(),
                ..Overrides::default()
            },
        )
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => serve::run(&cli, args).await,
        Command::Gc(args) => gc::run(&cli, args).await,
        Command::Fsck(args) => fsck::run(&cli, args).await,
        Command::ImportDistribution(args) => import::run(&cli, args).await,
        Command::MigrateStorage(args) => migrate::storage(&cli, args).await,
        Command::MigrateMetadata(args) => migrate::metadata(&cli, args).await,
        Command::User(cmd) => user::run(&cli, cmd).await,
        Command::Team(cmd) => team::run(&cli, cmd).await,
        Command::Token(cmd) => token::run(&cli, cmd).await,
        Command::Quota(cmd) => quota::run(&cli, cmd).await,
        Command::Retention(cmd) => retention::run(&cli, cmd).await,
        Command::K8s(args) => k8s::run(args).await,
    }
}

/// Records an account change made from the shell.
pub(crate) async fn audit(
    accounts: &dyn crate::meta::accounts::Accounts,
    action: &str,
    target: &str,
    detail: Option<String>,
) -> anyhow::Result<()> {
    accounts
        .audit(crate::meta::accounts::AuditEntry {
            at: crate::meta::now_ms(),
            actor: Some("cli".into()),
            action: action.into(),
            target: Some(target.into()),
            detail,
            client: None,
        })
        .await
}

pub(crate) use crate::auth::check_name;

pub(crate) fn format_time(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => time::OffsetDateTime::from_unix_timestamp(ms / 1000)
            .ok()
            .and_then(|t| {
                t.format(&time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]"
                ))
                .ok()
            })
            .unwrap_or_else(|| "-".into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
