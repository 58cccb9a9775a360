//! Running one operation many times on N connections, and metering the server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::future::BoxFuture;

use crate::client::Conn;
use crate::record::{cpu_seconds, peak_rss_kib, reset_peak_rss, Record};
use crate::registry::Target;

/// How many operations a run makes.
#[derive(Clone, Copy)]
pub enum Stop {
    /// Exactly this many, shared among the connections.
    Count(usize),
    /// As many as fit in this time (the last ones in flight finish).
    For(Duration),
}

#[derive(Default)]
pub struct Outcome {
    pub lat_us: Vec<u32>,
    pub bytes: u64,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Times a workload and reads what the server used meanwhile: CPU time and peak RSS
/// (the kernel's high-water mark is reset when the clock starts).
pub struct Meter {
    pid: Option<u32>,
    cpu0: Option<f64>,
    t0: Instant,
}

impl Meter {
    pub fn new(pid: Option<u32>) -> Self {
        Meter {
            pid,
            cpu0: None,
            t0: Instant::now(),
        }
    }

    pub fn start(&mut self) {
        if let Some(pid) = self.pid {
            reset_peak_rss(pid);
            self.cpu0 = cpu_seconds(pid);
        }
        self.t0 = Instant::now();
    }

    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// The finished record for `bytes` and `ops` done since [`Meter::start`].
    pub fn finish(&self, rec: Record, bytes: u64, ops: u64, lat_us: &mut [u32]) -> Record {
        let elapsed = self.t0.elapsed();
        let mut r = rec.finish(bytes, ops, elapsed, lat_us);
        if let Some(pid) = self.pid {
            if let (Some(a), Some(b)) = (self.cpu0, cpu_seconds(pid)) {
                r.server_cpu_s = Some(b - a);
            }
            r.rss_peak_kib = peak_rss_kib(pid);
        }
        r
    }

    pub fn finish_outcome(&self, rec: Record, mut o: Outcome) -> Record {
        let mut r = self.finish(rec, o.bytes, o.ops, &mut o.lat_us);
        r.errors = o.errors;
        if let Some(e) = o.first_error {
            r.note = Some(format!("first error: {e}"));
        }
        r
    }
}

/// An operation: gets a connection and the operation's index, returns payload bytes.
pub type OpFuture<'a> = BoxFuture<'a, Result<u64>>;

/// Opens `conns` connections (untimed), starts the meter, and runs `op` on them until
/// `stop`. Failed operations are counted, not retried.
pub async fn run_workers<F>(
    t: &Target,
    conns: usize,
    stop: Stop,
    meter: &mut Meter,
    op: F,
) -> Result<Outcome>
where
    F: for<'a> Fn(&'a mut Conn, usize) -> OpFuture<'a> + Send + Sync + 'static,
{
    let mut cs = Vec::with_capacity(conns);
    for _ in 0..conns.max(1) {
        let mut c = t.conn();
        c.warm().await?;
        cs.push(c);
    }
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    meter.start();
    let deadline = match stop {
        Stop::For(d) => Some(Instant::now() + d),
        Stop::Count(_) => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in cs {
        let (op, next) = (op.clone(), next.clone());
        tasks.spawn(async move {
            let mut o = Outcome::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match stop {
                    Stop::Count(n) if i >= n => break,
                    Stop::For(_) if deadline.is_some_and(|d| Instant::now() >= d) => break,
                    _ => {}
                }
                let t0 = Instant::now();
                match op(&mut c, i).await {
                    Ok(b) => {
                        o.lat_us
                            .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        o.bytes += b;
                        o.ops += 1;
                    }
                    Err(e) => {
                        o.errors += 1;
                        if o.first_error.is_none() {
                            o.first_error = Some(format!("{e:#}"));
                        }
                    }
                }
            }
            o
        });
    }
    let mut all = Outcome::default();
    while let Some(r) = tasks.join_next().await {
        let o = r?;
        all.lat_us.extend(o.lat_us);
        all.bytes += o.bytes;
        all.ops += o.ops;
        all.errors += o.errors;
        if all.first_error.is_none() {
            all.first_error = o.first_error;
        }
    }
    Ok(all)
}
