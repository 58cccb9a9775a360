//! Time from starting a registry process to its first HTTP answer, and its idle RSS.
//!
//! Blocking code on purpose: the poll loop sleeps 100 µs between attempts, finer than
//! an async timer's millisecond.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::record::{rss_anon_kib, rss_kib, Record};

/// One `GET /v2/` on a fresh connection; true when any HTTP status line came back.
fn answers(addr: SocketAddr, host: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut n = 0;
    while n < 9 {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => return false,
            Ok(k) => n += k,
        }
    }
    buf.starts_with(b"HTTP/1.")
}

fn stop(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts `cmd`, waits for the first answer at `url`, lets it idle `settle`, reads its
/// RSS, stops it (SIGTERM).
pub fn measure(
    registry: &str,
    url: &str,
    round: u32,
    settle: Duration,
    cmd: &[String],
    log: Option<&std::path::Path>,
) -> Result<Record> {
    let host = url
        .strip_prefix("http://")
        .context("only http:// URLs")?
        .trim_end_matches('/');
    let addr = host
        .to_socket_addrs()?
        .next()
        .context("address resolves to nothing")?;
    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        bail!("something already listens on {addr}; stop it first");
    }
    let (program, args) = cmd.split_first().context("no command given")?;
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p)?),
        None => Stdio::null(),
    };
    let t0 = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let first = loop {
        if answers(addr, host) {
            break t0.elapsed();
        }
        if let Some(status) = child.try_wait()? {
            bail!("{program} exited with {status} before answering");
        }
        if t0.elapsed() > Duration::from_secs(30) {
            stop(&mut child);
            bail!("{program} did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    std::thread::sleep(settle);
    let rss = rss_kib(child.id());
    let anon = rss_anon_kib(child.id());
    stop(&mut child);
    let us = first.as_micros() as u32;
    let mut r = Record::new("startup", registry, round, 1).finish(0, 1, first, &mut [us]);
    r.rss_kib = rss;
    r.rss_anon_kib = anon;
    r.note = Some(format!(
        "spawn to first GET /v2/ answer; RSS after {:.1} s idle",
        settle.as_secs_f64()
    ));
    Ok(r)
}
