//! The engines going away under a running registry: PostgreSQL restarted under load.
//! Requests fail cleanly while it is gone (503 `UNAVAILABLE` with `Retry-After`, never
//! a 500 or a hang), the registry recovers on its own once it is back, and nothing that
//! was acknowledged is lost. Skipped (loudly) without the test services;
//! The test stops the server, so it runs one of its own from
//! `BERTH_TEST_POSTGRES_BIN` (written by tests/services/start.sh).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{postgres_url, TestApp};
use crate::helpers::*;

/// What one request of the load came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Status(u16),
    /// 503 with `Retry-After`, as a client should be told to wait.
    Unavailable,
    /// No HTTP answer at all (connection refused or reset, timeout).
    NoAnswer,
}

/// What the load's workers record, side by side.
type Shared<T> = Arc<Mutex<Vec<T>>>;

fn outcome(r: reqwest::Result<reqwest::Response>) -> Outcome {
    match r {
        Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
            Outcome::Unavailable
        }
        Ok(r) => Outcome::Status(r.status().as_u16()),
        Err(_) => Outcome::NoAnswer,
    }
}

/// A PostgreSQL server of this test's own (initdb into a temporary directory, a free
/// port): stopping the shared test server would fail every other test running.
struct PrivatePostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn start(test: &str) -> Option<PrivatePostgres> {
        postgres_url(test)?;
        let bin = match std::env::var("BERTH_TEST_POSTGRES_BIN") {
            Ok(b) if !b.is_empty() => std::path::PathBuf::from(b),
            _ if std::env::var("BERTH_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
                panic!(
                    "{test}: BERTH_TEST_REQUIRE_SERVICES=1 but BERTH_TEST_POSTGRES_BIN is not set"
                )
            }
            _ => {
                eprintln!(
                    "SKIPPED: {test}: BERTH_TEST_POSTGRES_BIN is not set (tests/services/start.sh)"
                );
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres { bin, dir, port };
        // initdb refuses to run as root: the server runs as `postgres` then.
        if is_root() {
            pg.run(
                "chown",
                &["-R", "postgres:", &pg.dir.path().display().to_string()],
            );
        }
        let data = pg.data();
        pg.run_pg(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        let conf = pg.dir.path().join("pg/postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n",
            pg.dir.path().display()
        ));
        std::fs::write(&conf, text).unwrap();
        pg.ctl("start");
        let port_s = port.to_string();
        for sql in [
            "CREATE ROLE berth LOGIN SUPERUSER PASSWORD 'berth'",
            "CREATE DATABASE berth OWNER berth",
        ] {
            pg.run_pg(
                "psql",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port_s,
                    "-U",
                    "postgres",
                    "-qc",
                    sql,
                ],
            );
        }
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://berth:berth@127.0.0.1:{}/berth", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("pg").display().to_string()
    }

    fn ctl(&self, action: &str) {
        let log = self.dir.path().join("postgres.log").display().to_string();
        let data = self.data();
        self.run_pg(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-m", "fast", action,
            ],
        );
    }

    fn run_pg(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool).display().to_string();
        if is_root() {
            let mut all = vec!["-u", "postgres", "--", exe.as_str()];
            all.extend_from_slice(args);
            self.run("runuser", &all);
        } else {
            self.run(&exe, args);
        }
    }

    fn run(&self, cmd: &str, args: &[&str]) {
        let out = std::process::Command::new(cmd)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
        assert!(
            out.status.success(),
            "{cmd} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl").display().to_string();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--", &exe])
                .args(args)
                .output()
        } else {
            std::process::Command::new(&exe).args(args).output()
        };
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[tokio::test]
async fn postgres_restarted_under_load_fails_cleanly_and_recovers() {
    let test = "postgres_restarted_under_load_fails_cleanly_and_recovers";
    let Some(pg) = PrivatePostgres::start(test) else {
        return;
    };
    let app = TestApp::builder()
        .env("BERTH_METADATA__URL", &pg.url())
        .start()
        .await;
    let app = Arc::new(app);
    let repo = unique_repo("outage");
    let img = push_image(&app, &repo, "v1").await;

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Shared<(Instant, &'static str, Outcome)> = Default::default();
    // Blobs the registry acknowledged (201) during the load: each must pull back.
    let acked: Shared<(String, Vec<u8>)> = Default::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut workers = Vec::new();
    for w in 0..6 {
        let (app, repo, stop, outcomes, acked, client) = (
            app.clone(),
            repo.clone(),
            stop.clone(),
            outcomes.clone(),
            acked.clone(),
            client.clone(),
        );
        let tag_url = app.url(&format!("/v2/{repo}/manifests/v1"));
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (what, outcome) = if w % 2 == 0 {
                    let r = client
                        .get(&tag_url)
                        .header("accept", "application/vnd.oci.image.manifest.v1+json")
                        .send()
                        .await;
                    ("manifest GET", outcome(r))
                } else {
                    let data = format!("worker {w} blob {i} {}", unique()).into_bytes();
                    let digest = sha256_digest(&data);
                    let post = client
                        .post(app.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
                        .header("content-type", "application/octet-stream")
                        .body(data.clone())
                        .send()
                        .await;
                    let o = outcome(post);
                    if o == Outcome::Status(201) {
                        acked.lock().unwrap().push((digest, data));
                    }
                    ("blob push", o)
                };
                outcomes
                    .lock()
                    .unwrap()
                    .push((Instant::now(), what, outcome));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    // Down for longer than a request waits for a connection (5 s), so that some fail.
    let restarted_at = Instant::now();
    pg.ctl("stop");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503, "not ready while the database is down");
    tokio::time::sleep(Duration::from_secs(6)).await;
    pg.ctl("start");
    let back_at = Instant::now();
    // Recovery: within a few seconds of the server's return, requests succeed again.
    let deadline = back_at + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let last = outcomes
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(12)
            .cloned()
            .collect::<Vec<_>>();
        let recent_ok = last.len() == 12
            && last.iter().all(|(at, _, o)| {
                *at > back_at && matches!(o, Outcome::Status(200) | Outcome::Status(201))
            });
        if recent_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 20 s of PostgreSQL's return; last outcomes: {last:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let mut tally: BTreeMap<(&str, Outcome), u64> = BTreeMap::new();
    for (_, what, o) in &outcomes {
        *tally.entry((what, *o)).or_default() += 1;
    }
    eprintln!(
        "{test}: PostgreSQL was away for {:?}; outcomes: {tally:?}",
        back_at - restarted_at
    );
    for ((what, o), n) in &tally {
        assert!(
            matches!(
                o,
                Outcome::Status(200) | Outcome::Status(201) | Outcome::Unavailable
            ),
            "{n} × {what} answered {o:?}: only success or a 503 with Retry-After is acceptable"
        );
    }
    assert!(
        tally.keys().any(|(_, o)| *o == Outcome::Status(201)),
        "the load pushed nothing: {tally:?}"
    );
    assert!(
        tally.keys().any(|(_, o)| *o == Outcome::Unavailable),
        "nothing failed during an 8 s outage: {tally:?}"
    );
    // Every acknowledged blob and the image pull back bit-exact.
    let acked = acked.lock().unwrap().clone();
    for (digest, data) in &acked {
        assert_blob(&app, &repo, digest, data).await;
    }
    assert_manifest(&app, &repo, "v1", img.media_type, &img.manifest).await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
