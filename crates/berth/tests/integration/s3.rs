//! `berth serve` on the S3 blob store, against the real S3 server of `BERTH_TEST_S3_*`
//! (tests/services/start.sh): monolithic and chunked pushes of layers spanning several
//! multipart parts, ranged pulls, redirect mode, and a clear 503 while the storage is
//! unreachable. Skipped loudly without that server.

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::common::TestApp;
use crate::helpers::*;

/// The S3 store's multipart part size.
const PART: usize = blobstore::s3::DEFAULT_PART_SIZE;

async fn start_on_s3(env: &[(&str, &str)]) -> Option<TestApp> {
    let mut b = TestApp::builder();
    for (k, v) in env {
        b = b.env(k, v);
    }
    Some(b.s3()?.start().await)
}

async fn get_range(app: &TestApp, repo: &str, digest: &str, range: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v2/{repo}/blobs/{digest}")))
        .header("range", range)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn s3_monolithic_and_chunked_pushes_pull_back_whole_and_in_ranges() {
    let Some(app) = start_on_s3(&[]).await else {
        return;
    };
    let repo = unique_repo("s3");

    // Monolithic, larger than a part: streamed into a multipart upload.
    let big = random_bytes(PART + PART / 2);
    let big_digest = sha256_digest(&big);
    let resp = app
        .client
        .post(with_query(
            url(&app, &format!("/v2/{repo}/blobs/uploads/")),
            "digest",
            &big_digest,
        ))
        .header("content-type", "application/octet-stream")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    assert_blob(&app, &repo, &big_digest, &big).await;

    // Chunked: three PATCHes that do not line up with parts, then the last in the PUT.
    let data = random_bytes(2 * PART + 3_000_017);
    let digest = sha256_digest(&data);
    let mut upload = start_upload(&app, &repo).await;
    let cuts = [0, 5_000_000, 11_000_000, 19_000_000, data.len()];
    for w in cuts.windows(2).take(3) {
        let (a, b) = (w[0], w[1]);
        let resp = app
            .client
            .patch(upload.clone())
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{a}-{}", b - 1))
            .body(data[a..b].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        assert_eq!(upload_range_end(&resp), b as u64 - 1);
        upload = location(&resp);
    }
    let (a, b) = (cuts[3], cuts[4]);
    let resp = app
        .client
        .put(with_query(upload, "digest", &digest))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{a}-{}", b - 1))
        .body(data[a..b].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    assert_blob(&app, &repo, &digest, &data).await;

    // A range across the first part boundary.
    let (first, last) = (PART - 10, PART + 9);
    let resp = get_range(&app, &repo, &digest, &format!("bytes={first}-{last}")).await;
    assert_eq!(resp.status(), 206);
    assert_eq!(
        header(&resp, "content-range"),
        Some(format!("bytes {first}-{last}/{}", data.len()))
    );
    assert_eq!(&resp.bytes().await.unwrap()[..], &data[first..=last]);

    let head = head_blob(&app, &repo, &digest).await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "content-length"),
        Some(data.len().to_string())
    );

    // A small image end to end, manifest and all.
    let img = push_image(&app, &repo, "v1").await;
    let resp = get_manifest(&app, &repo, "v1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], &img.manifest[..]);
}

#[tokio::test]
async fn s3_redirect_mode_answers_307_to_a_url_serving_the_blob() {
    let Some(app) = start_on_s3(&[("BERTH_STORAGE__S3__REDIRECT", "true")]).await else {
        return;
    };
    let repo = unique_repo("s3redirect");
    let data = random_bytes(300_000);
    let digest = push_blob(&app, &repo, &data).await;

    let resp = get_blob(&app, &repo, &digest).await;
    assert_eq!(resp.status(), 307);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    let target = header(&resp, "location").expect("a Location");
    assert!(!target.contains("/v2/"), "points at the storage: {target}");
    let direct = reqwest::Client::new();
    let fetched = direct.get(&target).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(&fetched.bytes().await.unwrap()[..], &data[..]);

    // A client that follows redirects gets the bytes, and Range travels along.
    let following = reqwest::Client::new();
    let resp = following
        .get(app.url(&format!("/v2/{repo}/blobs/{digest}")))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(&resp.bytes().await.unwrap()[..], &data[1000..2000]);

    // HEAD is answered by the registry; a blob the repository lacks is still 404.
    let head = head_blob(&app, &repo, &digest).await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "content-length"),
        Some(data.len().to_string())
    );
    let other = unique_repo("s3redirect");
    assert_eq!(get_blob(&app, &other, &digest).await.status(), 404);
}

/// A TCP relay to the S3 server that can be cut (the storage "goes down") and
/// restored on the same port.
struct Relay {
    port: u16,
    target: String,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let mut r = Relay {
            port: 0,
            target,
            accept: None,
            conns: Arc::default(),
        };
        r.up().await;
        r
    }

    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.port = listener.local_addr().unwrap().port();
        let (target, conns) = (self.target.clone(), self.conns.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(conn);
            }
        }));
    }

    fn down(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down();
    }
}

/// 503 with distribution's `UNAVAILABLE` code (not among the OCI spec's codes, which
/// have none for this) and a `Retry-After`; returns the message.
async fn assert_unavailable(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 503);
    assert!(header(&resp, "retry-after").is_some());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    body["errors"][0]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn s3_unreachable_storage_answers_503_and_recovers() {
    let Ok(endpoint) = std::env::var("BERTH_TEST_S3_ENDPOINT") else {
        let _ = crate::common::s3_storage_env(); // says it is skipped (or fails)
        return;
    };
    let target = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut relay = Relay::start(target).await;
    let via = format!("http://127.0.0.1:{}", relay.port);
    let Some(app) = start_on_s3(&[("BERTH_STORAGE__S3__ENDPOINT", &via)]).await else {
        return;
    };
    let repo = unique_repo("s3down");
    let data = random_bytes(50_000);
    let digest = push_blob(&app, &repo, &data).await;

    relay.down();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let resp = get_blob(&app, &repo, &digest).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("5"));
    let body = assert_unavailable(resp).await;
    assert!(body.contains("storage"), "{body}");
    let other = random_bytes(1000);
    let resp = app
        .client
        .post(with_query(
            url(&app, &format!("/v2/{repo}/blobs/uploads/")),
            "digest",
            &sha256_digest(&other),
        ))
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_unavailable(resp).await;
    let resp = app
        .client
        .post(app.url(&format!("/v2/{repo}/blobs/uploads/")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_unavailable(resp).await;

    // Back: nothing half-stored, the failed push simply never happened.
    relay.up().await;
    assert_blob(&app, &repo, &digest, &data).await;
    assert_eq!(
        get_blob(&app, &repo, &sha256_digest(&other)).await.status(),
        404
    );
}
