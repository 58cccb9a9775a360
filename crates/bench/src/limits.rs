//! The machine's own limits, measured by the same harness in the same run as the
//! registries: what a push or a pull could reach at best on this machine.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};

use crate::client::{self, Conn};
use crate::data::{random_bytes, Pattern, MIB};
use crate::record::{Record, MACHINE};

fn record(workload: &str, round: u32) -> Record {
    Record::new(workload, MACHINE, round, 1)
}

/// SHA-256 on one core with the `sha2` crate (what Berth links), over `bytes` of data.
pub async fn sha256_sha2(round: u32, bytes: u64) -> Result<Record> {
    tokio::task::spawn_blocking(move || {
        let buf = random_bytes(1, 4 * MIB as usize);
        let mut h = Sha256::new();
        let t0 = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        std::hint::black_box(h.finalize());
        let el = t0.elapsed();
        let mut lat = [el.as_micros() as u32];
        Ok(record("sha256", round).finish(bytes, 1, el, &mut lat))
    })
    .await?
}

/// `openssl speed -evp sha256` on 1 MiB blocks (one core; uses SHA-NI where present).
pub async fn sha256_openssl(round: u32, seconds: u32) -> Result<Record> {
    let out = tokio::process::Command::new("openssl")
        .args(["speed", "-evp", "sha256", "-bytes", "1048576", "-seconds"])
        .arg(seconds.to_string())
        .output()
        .await
        .context("running openssl speed (is openssl installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Last line: "sha256   1245708.29k" (thousands of bytes per second).
    let kbps: f64 = text
        .lines()
        .rev()
        .find_map(|l| {
            let last = l.split_whitespace().last()?;
            last.strip_suffix('k')?.parse().ok()
        })
        .with_context(|| format!("unexpected openssl speed output: {text}"))?;
    let bytes_per_s = kbps * 1000.0;
    let el = Duration::from_secs(seconds as u64);
    let mut lat = [];
    let mut r = record("sha256-openssl", round).finish(
        (bytes_per_s * el.as_secs_f64()) as u64,
        1,
        el,
        &mut lat,
    );
    r.note = Some("openssl speed -evp sha256 -bytes 1048576".into());
    Ok(r)
}

/// Sequential write of `bytes` in 1 MiB writes, in `dir` (the disk the registries
/// write to), written back while it is written (a second thread `fdatasync`s it each
/// time 8 MiB more were written and its previous sync is done), then `fsync`: what the
/// disk takes durably, the ceiling of a durable push. Without the writeback on the way
/// this would time the copy into the page cache plus the flush of the whole file, one
/// after the other, and a registry that overlaps them would beat the "limit".
pub async fn disk_write(round: u32, dir: &Path, bytes: u64) -> Result<Record> {
    const STEP: u64 = 8 << 20;
    let path = dir.join(format!("disk-write-{}.tmp", std::process::id()));
    tokio::task::spawn_blocking(move || {
        let p = Pattern::new(2, bytes);
        let mut f = std::fs::File::create(&path)?;
        let t0 = Instant::now();
        let mut err = None;
        std::thread::scope(|scope| -> std::io::Result<()> {
            let mut unsynced = 0u64;
            let mut sync: Option<std::thread::ScopedJoinHandle<std::io::Result<()>>> = None;
            p.for_each_chunk(|c| {
                if err.is_some() {
                    return;
                }
                err = f.write_all(c).err();
                unsynced += c.len() as u64;
                if unsynced >= STEP && sync.as_ref().is_none_or(|s| s.is_finished()) {
                    if let Some(Err(e)) = sync.take().map(|s| s.join().expect("sync thread")) {
                        err = Some(e);
                    }
                    match f.try_clone() {
                        Ok(f2) => sync = Some(scope.spawn(move || f2.sync_data())),
                        Err(e) => err = Some(e),
                    }
                    unsynced = 0;
                }
            });
            if let Some(s) = sync {
                s.join().expect("sync thread")?;
            }
            Ok(())
        })?;
        if let Some(e) = err {
            return Err(e.into());
        }
        f.sync_all()?;
        let el = t0.elapsed();
        drop(f);
        std::fs::remove_file(&path)?;
        let mut lat = [el.as_micros() as u32];
        Ok(record("disk-write", round).finish(bytes, 1, el, &mut lat))
    })
    .await?
}

/// 4 KiB appends each followed by `fdatasync`, for `dur`: how many small durable
/// writes per second one thread gets (the floor under every small-blob commit).
pub async fn fsync_4k(round: u32, dir: &Path, dur: Duration) -> Result<Record> {
    let path = dir.join(format!("fsync-{}.tmp", std::process::id()));
    tokio::task::spawn_blocking(move || {
        let buf = random_bytes(3, 4096);
        let mut f = std::fs::File::create(&path)?;
        let mut lat = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < dur {
            let t = Instant::now();
            f.write_all(&buf)?;
            f.sync_data()?;
            lat.push(t.elapsed().as_micros() as u32);
        }
        let el = t0.elapsed();
        drop(f);
        std::fs::remove_file(&path)?;
        let n = lat.len() as u64;
        Ok(record("fsync-4k", round).finish(n * 4096, n, el, &mut lat))
    })
    .await?
}

/// A trivial HTTP/1.1 server in this process: `GET /?n=N` answers N pattern bytes,
/// `PUT` reads and discards its body. The ceiling for the same client over loopback.
pub async fn loopback_server() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let pattern = Pattern::new(4, 0);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let pattern = pattern.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let pattern = pattern.clone();
                    async move { serve(req, pattern).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn serve(
    req: Request<Incoming>,
    pattern: Pattern,
) -> Result<Response<client::Body>, hyper::Error> {
    if req.method() == Method::GET {
        let n: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("n="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut resp = Response::new(pattern.body(0, n));
        resp.headers_mut()
            .insert("content-length", n.to_string().parse().expect("a number"));
        return Ok(resp);
    }
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    let mut resp = Response::new(client::empty());
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

/// GET (`put == false`) or PUT of `bytes` over loopback to [`loopback_server`].
pub async fn loopback(round: u32, addr: SocketAddr, put: bool, bytes: u64) -> Result<Record> {
    let mut c = Conn::new(addr, addr.to_string());
    client::drain(c.send(Method::GET, "/?n=0", &[], client::empty()).await?).await?;
    let t0 = Instant::now();
    let moved = if put {
        let p = Pattern::new(5, bytes);
        let len = bytes.to_string();
        let resp = c
            .send(
                Method::PUT,
                "/",
                &[("content-length", &len)],
                p.body(0, bytes),
            )
            .await?;
        client::drain(resp).await?;
        bytes
    } else {
        let resp = c
            .send(Method::GET, &format!("/?n={bytes}"), &[], client::empty())
            .await?;
        client::drain(resp).await?.1
    };
    if moved != bytes {
        bail!("loopback moved {moved} bytes, not {bytes}");
    }
    let el = t0.elapsed();
    let mut lat = [el.as_micros() as u32];
    let name = if put { "loopback-put" } else { "loopback-get" };
    Ok(record(name, round).finish(bytes, 1, el, &mut lat))
}
