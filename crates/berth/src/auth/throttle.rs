//! Throttling of failed logins, per user name and per client address.
//!
//! After `FREE_FAILURES` failures, each further attempt must wait a delay that doubles
//! with every failure (1 s, 2 s, 4 s, … up to 15 min). A success clears the user's
//! record. Records are forgotten after a quiet period, so memory stays bounded by the
//! rate of distinct failing keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FREE_FAILURES: u32 = 5;
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

fn delay(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (failures - FREE_FAILURES).min(20);
    Duration::from_secs(1u64 << exp).min(MAX_DELAY)
}

impl Throttle {
    /// `Err(wait)` if an attempt for any of `keys` must wait.
    pub fn check(&self, keys: &[&str]) -> Result<(), Duration> {
        let map = self.failures.lock().unwrap();
        let now = Instant::now();
        let wait = keys
            .iter()
            .filter_map(|k| map.get(*k))
            .map(|(n, last)| (*last + delay(*n)).saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    pub fn failed(&self, keys: &[&str]) {
        let mut map = self.failures.lock().unwrap();
        let now = Instant::now();
        if map.len() > 100_000 {
            map.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        }
        for k in keys {
            let e = map.entry(k.to_string()).or_insert((0, now));
            if now.duration_since(e.1) > FORGET_AFTER {
                e.0 = 0;
            }
            e.0 += 1;
            e.1 = now;
        }
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_after_free_failures() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed(&["user:a", "ip:1"]);
        }
        assert!(t.check(&["user:a"]).is_ok());
        t.failed(&["user:a", "ip:1"]);
        assert!(t.check(&["user:a"]).is_err());
        assert!(t.check(&["ip:1"]).is_err());
        assert!(t.check(&["user:b", "ip:2"]).is_ok());
        t.succeeded("user:a");
        assert!(t.check(&["user:a"]).is_ok());
        assert!(t.check(&["user:a", "ip:1"]).is_err());
        assert_eq!(delay(FREE_FAILURES + 30), MAX_DELAY);
    }
}
