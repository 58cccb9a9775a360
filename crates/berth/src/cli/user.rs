//! `berth user add|rm|ls|passwd|admin`

use std::io::Read;

use anyhow::{bail, Context};
use clap::Subcommand;

use super::{audit, check_name, format_time, Cli};
use crate::app::Stores;
use crate::auth::password;
use crate::meta::accounts::{AccountKind, Created};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a user (and so their namespace).
    Add {
        name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (one trailing newline removed);
        /// without it a random password is generated and printed.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user and every repository in their namespace.
    Rm { name: String },
    /// List users.
    Ls,
    /// Set a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Grant (or with --revoke, take away) administrator rights.
    Admin {
        name: String,
        #[arg(long)]
        revoke: bool,
    },
}

/// The password from stdin (one trailing newline removed), or a generated one.
fn new_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((password::random_password(), true));
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from stdin")?;
    let p = s
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&s);
    crate::auth::check_password(p)?;
    Ok((p.to_string(), false))
}

pub async fn run(cli: &Cli, cmd: &Command) -> anyhow::Result<()> {
    let config = cli.config()?;
    let accounts = Stores::open(&config).await?.accounts;
    match cmd {
        Command::Add {
            name,
            admin,
            password_stdin,
        } => {
            check_name("user", name)?;
            let (pw, generated) = new_password(*password_stdin)?;
            let hash = password::hash(&pw)?;
            match accounts.user_create(name, &hash, *admin).await? {
                Created::Ok(u) => {
                    audit(
                        accounts.as_ref(),
                        "user_add",
                        name,
                        admin.then(|| "admin".into()),
                    )
                    .await?;
                    println!(
                        "created user {}{}",
                        u.name,
                        if u.is_admin { " (admin)" } else { "" }
                    );
                    if generated {
                        println!("password: {pw}");
                    }
                }
                Created::NameTaken => bail!("the name {name:?} is already taken by a user or team"),
            }
        }
        Command::Rm { name } => match accounts.account_delete(name, AccountKind::User).await? {
            Some(repos) => {
                audit(
                    accounts.as_ref(),
                    "user_rm",
                    name,
                    Some(format!("{repos} repositories")),
                )
                .await?;
                println!("deleted user {name} and {repos} repositories in namespace {name}/ (storage is reclaimed by garbage collection)");
            }
            None => bail!("no user named {name:?}"),
        },
        Command::Ls => {
            let users = accounts.users().await?;
            println!(
                "{:<32} {:<6} {:<17} {:<17}",
                "NAME", "ADMIN", "CREATED", "LAST LOGIN"
            );
            for u in users {
                println!(
                    "{:<32} {:<6} {:<17} {:<17}",
                    u.name,
                    if u.is_admin { "yes" } else { "no" },
                    format_time(Some(u.created_at)),
                    format_time(u.last_login_at)
                );
            }
        }
        Command::Passwd {
            name,
            password_stdin,
        } => {
            let (pw, generated) = new_password(*password_stdin)?;
            if !accounts
                .user_set_password(name, &password::hash(&pw)?)
                .await?
            {
                bail!("no user named {name:?}");
            }
            audit(accounts.as_ref(), "user_passwd", name, None).await?;
            println!("password of {name} changed");
            if generated {
                println!("password: {pw}");
            }
        }
        Command::Admin { name, revoke } => {
            if !accounts.user_set_admin(name, !revoke).await? {
                bail!("no user named {name:?}");
            }
            audit(
                accounts.as_ref(),
                if *revoke {
                    "admin_revoke"
                } else {
                    "admin_grant"
                },
                name,
                None,
            )
            .await?;
            println!(
                "{name} is {} an administrator",
                if *revoke { "no longer" } else { "now" }
            );
        }
    }
    Ok(())
}
