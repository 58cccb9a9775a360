//! A bounded soak (issue 10): hundreds of concurrent clients push and pull while the
//! garbage collector runs in a loop; no request fails, and the server's memory and
//! file descriptors come back to where they were.
//!
//! CI runs it for 20 s with 200 clients; for a long one:
//! `BERTH_SOAK_SECONDS=600 BERTH_SOAK_CLIENTS=400 cargo test --test integration soak -- --nocapture`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::TestApp;
use crate::helpers::*;

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// One client's round: a small image pushed (two blobs, monolithic, and a manifest),
/// then pulled back and compared.
async fn round(client: &reqwest::Client, base: &str, repo: &str, tag: &str) -> Result<(), String> {
    let config = format!("{{\"soak\":\"{repo}:{tag}\"}}").into_bytes();
    let layer = random_bytes(2048);
    for data in [&config, &layer] {
        let d = sha256_digest(data);
        let r = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(data.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != 201 {
            return Err(format!("blob push: {}", r.status()));
        }
    }
    let manifest = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &layer)],
    }));
    let r = client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("manifest push: {}", r.status()));
    }
    let r = client
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 || r.bytes().await.map_err(|e| e.to_string())? != manifest {
        return Err("manifest pull differs".into());
    }
    let r = client
        .get(format!("{base}/v2/{repo}/blobs/{}", sha256_digest(&layer)))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 || r.bytes().await.map_err(|e| e.to_string())? != layer {
        return Err("blob pull differs".into());
    }
    Ok(())
}

/// `clients` clients doing rounds until `deadline`: (rounds ok, rounds failed, first
/// errors). The connection pool is dropped at the end.
async fn load(base: &str, clients: usize, deadline: Instant) -> (u64, u64, Vec<String>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, base) = (client.clone(), base.to_string());
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let repo = format!("soak/c{c:03}");
            let mut i = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline {
                match round(&client, &base, &repo, &format!("t{}", i % 5)).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        first_error.get_or_insert(e);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += 1;
            }
            first_error
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Some(e) = t.await.unwrap() {
            errors.push(e);
        }
    }
    drop(client);
    // Let the server see the connections close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        errors,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_clients_push_and_pull_while_the_collector_runs() {
    if skip_external("soak", "reads the server's memory and file descriptors") {
        return;
    }
    let seconds = env_or("BERTH_SOAK_SECONDS", 20);
    let clients = env_or("BERTH_SOAK_CLIENTS", 200) as usize;
    let app = Arc::new(TestApp::start().await);
    let pid = app.pid().unwrap();
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let collector = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || {
            let mut runs = 0;
            while Instant::now() < end {
                crate::gc::gc(&app, &[]);
                runs += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            runs
        })
    };
    // The first quarter warms everything up (connection pools, caches, the allocator);
    // what the server holds after it is the baseline the rest must come back to.
    let warm = started + Duration::from_secs(seconds / 4).max(Duration::from_secs(3));
    let (ok1, bad1, mut errors) = load(&app.base, clients, warm).await;
    let (rss0, fds0) = (rss_kib(pid), open_fds(pid));
    let (ok2, bad2, errors2) = load(&app.base, clients, end).await;
    errors.extend(errors2);
    let gc_runs = collector.await.unwrap();
    let (rss1, fds1) = (rss_kib(pid), open_fds(pid));
    let (ok, bad) = (ok1 + ok2, bad1 + bad2);
    eprintln!(
        "soak: {clients} clients, {seconds} s, {ok} rounds ok, {bad} failed, {gc_runs} collections; \
         after warm-up RSS {rss0} KiB, fds {fds0}; at the end RSS {rss1} KiB, fds {fds1}"
    );
    assert_eq!(
        bad,
        0,
        "failed rounds, first errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    assert!(
        ok2 as usize >= clients,
        "every client got through a round after the warm-up"
    );
    assert!(gc_runs >= 2, "the collector ran meanwhile");
    // Memory flat: within 32 MiB of the warm baseline (bodies are streamed, nothing
    // per request is kept).
    assert!(
        rss1 < rss0 + 32 * 1024,
        "RSS grew from {rss0} to {rss1} KiB"
    );
    // File descriptors flat: every client connection closed, nothing leaked.
    assert!(
        fds1 <= fds0 + 4,
        "open file descriptors grew from {fds0} to {fds1}"
    );
}
