//! `berth token create|ls|revoke`: access tokens for CI and robots, usable as the
//! password in `docker login`. Only a hash of each token is stored; the secret is shown
//! once, at creation.

use anyhow::bail;
use clap::Subcommand;

use super::{audit, format_time, Cli};
use crate::app::Stores;
use crate::auth::{new_token_secret, password};
use crate::config::parse_duration;
use crate::meta::accounts::Created;
use crate::meta::now_ms;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a token for a user; prints the secret once.
    Create {
        #[arg(long)]
        user: String,
        /// A name to tell the user's tokens apart (e.g. "ci").
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. 30d or 12h; without it the token lives until revoked.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List tokens (of one user, or all).
    Ls {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
    },
}

pub async fn run(cli: &Cli, cmd: &Command) -> anyhow::Result<()> {
    let config = cli.config()?;
    let accounts = Stores::open(&config).await?.accounts;
    match cmd {
        Command::Create {
            user,
            name,
            expires,
        } => {
            crate::auth::check_token_name(name)?;
            let Some((u, _)) = accounts.user_by_name(user).await? else {
                bail!("no user named {user:?}");
            };
            let secret = new_token_secret();
            let expires_at = expires.map(|d| now_ms() + d.as_millis() as i64);
            match accounts
                .token_create(u.id, name, &password::secret_hash(&secret), expires_at)
                .await?
            {
                Created::Ok(t) => {
                    audit(accounts.as_ref(), "token_create", user, Some(name.clone())).await?;
                    println!(
                        "created token {} for {} (expires: {})",
                        t.name,
                        t.user,
                        format_time(t.expires_at)
                    );
                    println!("{secret}");
                    eprintln!("use it as the password: echo $TOKEN | docker login --username {user} --password-stdin REGISTRY");
                }
                Created::NameTaken => bail!("{user} already has a token named {name:?}"),
            }
        }
        Command::Ls { user } => {
            println!(
                "{:<24} {:<24} {:<17} {:<17} {:<17}",
                "USER", "NAME", "CREATED", "EXPIRES", "LAST USED"
            );
            for t in accounts.tokens(user.as_deref()).await? {
                println!(
                    "{:<24} {:<24} {:<17} {:<17} {:<17}",
                    t.user,
                    t.name,
                    format_time(Some(t.created_at)),
                    format_time(t.expires_at),
                    format_time(t.last_used_at)
                );
            }
        }
        Command::Revoke { user, name } => {
            if !accounts.token_revoke(user, name).await? {
                bail!("{user} has no token named {name:?}");
            }
            audit(accounts.as_ref(), "token_revoke", user, Some(name.clone())).await?;
            println!("revoked token {name} of {user}");
        }
    }
    Ok(())
}
