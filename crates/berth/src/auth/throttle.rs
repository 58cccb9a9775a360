//! Throttling of failed logins, per user name and per client address.
//!
//! After `FREE_FAILURES` failures, each further attempt must wait a delay that doubles
//! with every failure (1 s, 2 s, 4 s, … up to 15 min). A success clears the user's
//! record. The counts live in the metadata database (`login_failures`), so every replica
//! on one PostgreSQL throttles the same attempts: N replicas do not allow N times the
//! free failures. Records an hour old are forgotten as new failures arrive, so the table
//! stays bounded by the rate of distinct failing keys.

use std::time::Duration;

use crate::meta::accounts::Accounts;
use crate::meta::{now_ms, Result};

const FREE_FAILURES: u32 = 5;
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

fn delay(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (failures - FREE_FAILURES).min(20);
    Duration::from_secs(1u64 << exp).min(MAX_DELAY)
}

/// How long an attempt recorded as `failures` failures, the last at `last` (ms), must
/// still wait at `now` (ms).
fn wait(failures: u32, last: i64, now: i64) -> Duration {
    if now.saturating_sub(last) > FORGET_AFTER.as_millis() as i64 {
        return Duration::ZERO;
    }
    let until = last.saturating_add(delay(failures).as_millis() as i64);
    Duration::from_millis(until.saturating_sub(now).max(0) as u64)
}

/// The keys of a sign-in attempt: its user name and, when known, the client's address.
pub struct Keys {
    user: String,
    address: Option<String>,
}

impl Keys {
    pub fn new(user: &str, client: Option<std::net::IpAddr>) -> Keys {
        Keys {
            user: format!("user:{user}"),
            address: client.map(|ip| format!("ip:{ip}")),
        }
    }

    fn all(&self) -> Vec<&str> {
        std::iter::once(self.user.as_str())
            .chain(self.address.as_deref())
            .collect()
    }
}

/// What the database said of an attempt's keys before it was checked.
pub struct Checked {
    /// The user's key has failures on record (a success must clear them).
    user_recorded: bool,
}

/// `Ok(Err(wait))` if an attempt under any of `keys` must wait.
pub async fn check(
    accounts: &dyn Accounts,
    keys: &Keys,
) -> Result<std::result::Result<Checked, Duration>> {
    let now = now_ms();
    let records = accounts.login_failures(&keys.all()).await?;
    let longest = records
        .iter()
        .map(|(_, n, last)| wait(*n, *last, now))
        .max()
        .unwrap_or_default();
    if !longest.is_zero() {
        return Ok(Err(longest));
    }
    Ok(Ok(Checked {
        user_recorded: records.iter().any(|(k, _, _)| *k == keys.user),
    }))
}

/// Counts a failed attempt under each of its keys.
pub async fn failed(accounts: &dyn Accounts, keys: &Keys) -> Result<()> {
    let now = now_ms();
    let forget_before = now - FORGET_AFTER.as_millis() as i64;
    accounts.login_failed(&keys.all(), now, forget_before).await
}

/// A successful attempt clears the user's record (not the address's); a sign-in with
/// nothing on record writes nothing.
pub async fn succeeded(accounts: &dyn Accounts, keys: &Keys, checked: &Checked) -> Result<()> {
    if checked.user_recorded {
        accounts.login_forget(&keys.user).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_after_free_failures() {
        let now = 1_000_000_000;
        for n in 0..FREE_FAILURES {
            assert_eq!(wait(n, now, now), Duration::ZERO);
        }
        assert_eq!(wait(FREE_FAILURES, now, now), Duration::from_secs(1));
        assert_eq!(wait(FREE_FAILURES + 3, now, now), Duration::from_secs(8));
        assert_eq!(
            wait(FREE_FAILURES + 3, now, now + 5_000),
            Duration::from_secs(3)
        );
        assert_eq!(wait(FREE_FAILURES + 3, now, now + 9_000), Duration::ZERO);
        assert_eq!(delay(FREE_FAILURES + 30), MAX_DELAY);
        // An hour of quiet and the record no longer counts, whatever it says.
        let later = now + FORGET_AFTER.as_millis() as i64 + 1;
        assert_eq!(wait(FREE_FAILURES + 30, now, later), Duration::ZERO);
    }

    #[test]
    fn keys_are_the_user_and_the_address_if_known() {
        let ip = "192.0.2.7".parse().ok();
        assert_eq!(Keys::new("alice", ip).all(), ["user:alice", "ip:192.0.2.7"]);
        assert_eq!(Keys::new("alice", None).all(), ["user:alice"]);
    }
}
