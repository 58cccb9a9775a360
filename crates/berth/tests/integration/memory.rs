//! Streaming: moving a large layer must not grow the server's memory with its size.

use futures_util::stream;
use sha2::{Digest as _, Sha256};

use crate::common::TestApp;

/// Peak resident set size (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Deterministic pseudo-random data, generated chunk by chunk (the test doesn't hold
/// the layer in memory either): one random MiB, each copy stamped with its index.
fn chunk(i: u64, len: usize) -> Vec<u8> {
    static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..CHUNK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    });
    let mut c = base[..len].to_vec();
    c[..8].copy_from_slice(&i.to_le_bytes());
    c
}

const CHUNK: usize = 1 << 20;
const CHUNKS: u64 = 1024; // 1 GiB

#[tokio::test]
async fn pushing_and_pulling_a_1_gib_layer_keeps_peak_rss_under_64_mib() {
    let app = TestApp::start().await;
    if app.is_external() {
        eprintln!("SKIPPED: needs a local berth process to measure its memory");
        return;
    }
    let pid = app.pid().unwrap();
    let before = peak_rss(pid);

    let mut h = Sha256::new();
    for i in 0..CHUNKS {
        h.update(chunk(i, CHUNK));
    }
    let digest = format!("sha256:{}", hex::encode(h.finalize()));

    // Streamed PATCH of the whole layer, then PUT.
    let resp = app
        .client
        .post(app.url("/v2/big/layer/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let body = reqwest::Body::wrap_stream(stream::iter(
        (0..CHUNKS).map(|i| Ok::<_, std::io::Error>(chunk(i, CHUNK))),
    ));
    let resp = app
        .client
        .patch(app.url(&loc))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.headers()["range"],
        format!("0-{}", CHUNKS * CHUNK as u64 - 1).as_str()
    );
    let resp = app
        .client
        .put(format!("{}?digest={digest}", app.url(&loc)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);

    // Pull it back, hashing as it arrives.
    let mut resp = app
        .client
        .get(app.url(&format!("/v2/big/layer/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = resp.chunk().await.unwrap() {
        n += c.len() as u64;
        h.update(&c);
    }
    assert_eq!(n, CHUNKS * CHUNK as u64);
    assert_eq!(format!("sha256:{}", hex::encode(h.finalize())), digest);

    let peak = peak_rss(pid);
    eprintln!(
        "berth peak RSS: {} MiB before, {} MiB after 1 GiB push + pull",
        before >> 20,
        peak >> 20
    );
    assert!(peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
}
