//! One measurement = one JSON line, and what is read from `/proc` about a server.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The registry name under which the machine's own limits are recorded.
pub const MACHINE: &str = "machine";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub workload: String,
    /// The target's name (`berth`, `distribution`, ...) or [`MACHINE`].
    pub registry: String,
    pub round: u32,
    /// Concurrent connections used.
    pub conns: u32,
    /// Payload bytes moved (blob bytes, response bodies), not counting HTTP headers.
    pub bytes: u64,
    /// Wall-clock time of the measured part.
    pub seconds: f64,
    /// Completed operations (requests, or blobs for pushes of several requests).
    pub ops: u64,
    pub ops_per_s: f64,
    /// Payload throughput in MB/s (10^6 bytes per second).
    pub mb_per_s: f64,
    /// Latency of one operation, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// Peak resident set of the server during the workload (VmHWM after resetting it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_peak_kib: Option<u64>,
    /// Resident set of the server (idle, for `startup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kib: Option<u64>,
    /// Its anonymous part (RssAnon: heap, stacks, written data), for `startup`: the
    /// memory the process holds privately, without the shared, file-backed pages of its
    /// executable and libraries that VmRSS also counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_anon_kib: Option<u64>,
    /// CPU time (user + system) the server process spent during the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Record {
    pub fn new(workload: &str, registry: &str, round: u32, conns: u32) -> Self {
        Record {
            workload: workload.to_string(),
            registry: registry.to_string(),
            round,
            conns,
            ..Default::default()
        }
    }

    /// Fills the derived fields from bytes, ops, elapsed time and per-op latencies.
    pub fn finish(mut self, bytes: u64, ops: u64, elapsed: Duration, lat_us: &mut [u32]) -> Self {
        let s = elapsed.as_secs_f64().max(1e-9);
        self.bytes = bytes;
        self.ops = ops;
        self.seconds = s;
        self.ops_per_s = ops as f64 / s;
        self.mb_per_s = bytes as f64 / s / 1e6;
        lat_us.sort_unstable();
        self.p50_ms = percentile(lat_us, 0.50) as f64 / 1000.0;
        self.p99_ms = percentile(lat_us, 0.99) as f64 / 1000.0;
        self
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Resets the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0).
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon:")
}

/// User + system CPU seconds a process has used (all its threads).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 of `rest`.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn proc_readings_work_on_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!((1..=rss_kib(me).unwrap()).contains(&rss_anon_kib(me).unwrap()));
        assert!(cpu_seconds(me).is_some());
    }
}
