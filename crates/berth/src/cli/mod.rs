//! The `berth` command line: one module per subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod serve;

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
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(ref args) => serve::run(&cli, args).await,
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
