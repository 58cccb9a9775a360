//! Crash safety (issue 10): the server is SIGKILLed at random moments while clients push
//! (monolithic, chunked, streamed), put manifests, delete tags and a collector runs.
//! After every restart `berth fsck` is clean, every push acknowledged with 201 pulls
//! back bit-exact, every acknowledged delete stayed deleted, and upload sessions open at
//! the kill either resume or are cleanly gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::TestApp;
use crate::helpers::*;

/// What the server acknowledged, as the clients saw it.
#[derive(Default)]
struct Acked {
    /// repo, digest -> bytes (201 to the blob push).
    blobs: HashMap<(String, String), Vec<u8>>,
    /// repo:tag -> manifest bytes (201), or None once its delete got 202.
    tags: HashMap<(String, String), Option<Vec<u8>>>,
    /// Sessions that were open (202) when last seen.
    sessions: Vec<String>,
}

/// A tiny deterministic RNG (no dependency, reproducible from the seed in the log).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The absolute URL of a response's `Location`.
fn next_url(base: &str, r: &reqwest::Response) -> Option<String> {
    let loc = r.headers().get("location")?.to_str().ok()?;
    Some(if loc.starts_with("http") {
        loc.to_string()
    } else {
        format!("{base}{loc}")
    })
}

async fn client_loop(
    base: String,
    worker: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
) {
    let client = reqwest::Client::new();
    let repo = format!("crash/w{worker}");
    let mut rng = Rng(seed | 1);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let data = random_bytes(1000 + rng.below(60_000) as usize);
        let d = sha256_digest(&data);
        let pushed = match rng.below(3) {
            // Monolithic.
            0 => client
                .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
                .body(data.clone())
                .send()
                .await
                .is_ok_and(|r| r.status() == 201),
            // Chunked: POST, PATCH with Content-Range, PUT.
            1 => async {
                let r = client
                    .post(format!("{base}/v2/{repo}/blobs/uploads/"))
                    .send()
                    .await
                    .ok()?;
                let url = next_url(&base, &r)?;
                acked.lock().unwrap().sessions.push(url.clone());
                let half = data.len() / 2;
                let r = client
                    .patch(&url)
                    .header("content-range", format!("0-{}", half - 1))
                    .body(data[..half].to_vec())
                    .send()
                    .await
                    .ok()?;
                let url = next_url(&base, &r)?;
                let sep = if url.contains('?') { '&' } else { '?' };
                let r = client
                    .put(format!("{url}{sep}digest={d}"))
                    .header("content-range", format!("{half}-{}", data.len() - 1))
                    .body(data[half..].to_vec())
                    .send()
                    .await
                    .ok()?;
                Some(r.status() == 201)
            }
            .await
            .unwrap_or(false),
            // Streamed PATCH (no length), then PUT.
            _ => async {
                let r = client
                    .post(format!("{base}/v2/{repo}/blobs/uploads/"))
                    .send()
                    .await
                    .ok()?;
                let url = next_url(&base, &r)?;
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    data.chunks(7000).map(|c| Ok(c.to_vec())).collect();
                let r = client
                    .patch(&url)
                    .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                        chunks,
                    )))
                    .send()
                    .await
                    .ok()?;
                let url = next_url(&base, &r)?;
                let sep = if url.contains('?') { '&' } else { '?' };
                let r = client
                    .put(format!("{url}{sep}digest={d}"))
                    .send()
                    .await
                    .ok()?;
                Some(r.status() == 201)
            }
            .await
            .unwrap_or(false),
        };
        if !pushed {
            continue;
        }
        acked
            .lock()
            .unwrap()
            .blobs
            .insert((repo.clone(), d.clone()), data.clone());
        // A manifest over it, tagged; sometimes delete an older tag.
        let tag = format!("t{}", i % 7);
        let manifest = manifest_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": d, "size": data.len()},
            "layers": [],
        }));
        let key = (repo.clone(), tag.clone());
        // Unknown until answered: a kill now leaves the tag either way.
        acked.lock().unwrap().tags.remove(&key);
        if let Ok(r) = client
            .put(format!("{base}/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
        {
            if r.status() == 201 {
                acked.lock().unwrap().tags.insert(key, Some(manifest));
            }
        }
        if rng.below(4) == 0 {
            let old = format!("t{}", rng.below(7));
            let key = (repo.clone(), old.clone());
            acked.lock().unwrap().tags.remove(&key);
            if let Ok(r) = client
                .delete(format!("{base}/v2/{repo}/manifests/{old}"))
                .send()
                .await
            {
                if r.status() == 202 {
                    acked.lock().unwrap().tags.insert(key, None);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_at_random_moments() {
    if skip_external("crash", "kills the server") {
        return;
    }
    let rounds = std::env::var("BERTH_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4u64);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed | 1);
    let mut app = TestApp::start().await;
    let acked = Arc::new(Mutex::new(Acked::default()));
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..6)
            .map(|w| {
                tokio::spawn(client_loop(
                    app.base.clone(),
                    w,
                    rng.next(),
                    stop.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        let collector = {
            let (stop, dir) = (stop.clone(), app.data_dir().to_path_buf());
            let env: Vec<(String, String)> = app
                .env_vars()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            tokio::task::spawn_blocking(move || {
                while !stop.load(Ordering::Relaxed) {
                    // May be killed along with nothing: it is its own process, and a
                    // collection interrupted by the server's death is still valid.
                    let _ = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
                        .args(["gc", "--data-dir"])
                        .arg(&dir)
                        .envs(env.iter().map(|(k, v)| (k, v)))
                        .env("RUST_LOG", "error")
                        .output();
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
        app.kill_and_restart().await;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.unwrap();
        }
        collector.await.unwrap();

        // fsck is clean after every restart.
        let out = app.cli(&["fsck"], None);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("fsck: clean"),
            "round {round} (seed {seed}):\n{text}"
        );

        // Everything acknowledged is there, bit-exact; acknowledged deletes stayed.
        let (blobs, tags, sessions) = {
            let a = acked.lock().unwrap();
            let blobs: Vec<_> = a
                .blobs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let tags: Vec<_> = a.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            (blobs, tags, a.sessions.clone())
        };
        for ((repo, d), data) in &blobs {
            assert_blob(&app, repo, d, data).await;
        }
        for ((repo, tag), want) in &tags {
            let resp = app
                .client
                .get(app.url(&format!("/v2/{repo}/manifests/{tag}")))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            match want {
                Some(m) => {
                    assert_eq!(
                        resp.status(),
                        200,
                        "round {round}: {repo}:{tag} acknowledged, lost"
                    );
                    assert_eq!(&resp.bytes().await.unwrap()[..], &m[..], "{repo}:{tag}");
                }
                None => assert_eq!(
                    resp.status(),
                    404,
                    "round {round}: {repo}:{tag} deleted, back"
                ),
            }
        }
        // Sessions: resumable (204 with a Range) or cleanly gone (404).
        for url in &sessions {
            let resp = app.client.get(url).send().await.unwrap();
            let s = resp.status().as_u16();
            assert!(
                s == 204 || s == 404,
                "round {round}: session {url} answers {s}"
            );
            if s == 204 {
                assert!(
                    header(&resp, "range").is_some(),
                    "a resumable session says where it stands"
                );
            }
        }
        acked.lock().unwrap().sessions.clear();
        eprintln!(
            "round {round}: {} blobs, {} tags checked",
            blobs.len(),
            tags.len()
        );
    }
}
