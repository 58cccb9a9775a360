//! `berth team add|rm|ls|member add|member rm`

use anyhow::bail;
use clap::Subcommand;

use super::{audit, check_name, Cli};
use crate::app::Stores;
use crate::meta::accounts::{AccountKind, Created, MemberChange, Role};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a team (and so its namespace).
    Add { team: String },
    /// Delete a team and every repository in its namespace.
    Rm { team: String },
    /// List teams and their members.
    Ls,
    /// Add or remove members.
    #[command(subcommand)]
    Member(MemberCommand),
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add USER to TEAM (pull, push and delete in the team's namespace).
    Add { team: String, user: String },
    /// Remove USER from TEAM.
    Rm { team: String, user: String },
}

pub async fn run(cli: &Cli, cmd: &Command) -> anyhow::Result<()> {
    let config = cli.config()?;
    let accounts = Stores::open(&config).await?.accounts;
    match cmd {
        Command::Add { team } => {
            check_name("team", team)?;
            match accounts.team_create(team).await? {
                Created::Ok(_) => {
                    audit(accounts.as_ref(), "team_add", team, None).await?;
                    println!("created team {team}");
                }
                Created::NameTaken => bail!("the name {team:?} is already taken by a user or team"),
            }
        }
        Command::Rm { team } => match accounts.account_delete(team, AccountKind::Team).await? {
            Some(repos) => {
                audit(
                    accounts.as_ref(),
                    "team_rm",
                    team,
                    Some(format!("{repos} repositories")),
                )
                .await?;
                println!("deleted team {team} and {repos} repositories in namespace {team}/ (storage is reclaimed by garbage collection)");
            }
            None => bail!("no team named {team:?}"),
        },
        Command::Ls => {
            for t in accounts.teams().await? {
                let members: Vec<&str> = t.members.iter().map(|m| m.user.as_str()).collect();
                println!("{:<32} {}", t.name, members.join(", "));
            }
        }
        Command::Member(MemberCommand::Add { team, user }) => {
            match accounts.team_member_add(team, user, Role::Member).await? {
                MemberChange::Done => {
                    audit(accounts.as_ref(), "member_add", team, Some(user.clone())).await?;
                    println!("{user} is now a member of {team}");
                }
                MemberChange::NoSuchTeam => bail!("no team named {team:?}"),
                MemberChange::NoSuchUser => bail!("no user named {user:?}"),
            }
        }
        Command::Member(MemberCommand::Rm { team, user }) => {
            match accounts.team_member_remove(team, user).await? {
                MemberChange::Done => {
                    audit(accounts.as_ref(), "member_rm", team, Some(user.clone())).await?;
                    println!("{user} is no longer a member of {team}");
                }
                MemberChange::NoSuchTeam => bail!("no team named {team:?}"),
                MemberChange::NoSuchUser => bail!("{user:?} is not a member of {team:?}"),
            }
        }
    }
    Ok(())
}
