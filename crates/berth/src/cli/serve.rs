//! `berth serve`

use crate::config::{Config, Overrides};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on; overrides server.listen (default 0.0.0.0:5000).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Run an open registry without authentication (auth.enabled = false).
    #[arg(long)]
    pub no_auth: bool,
}

pub async fn run(cli: &super::Cli, args: &Args) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen.clone(),
        data_dir: cli.data_dir.clone(),
        no_auth: args.no_auth,
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    crate::telemetry::init(&config.log);
    crate::server::run(config).await
}
