//! Durability: what a 201/202 acknowledged survives restarts and SIGKILL, upload
//! sessions can be resumed after a crash, an interrupted PATCH never shows up as a
//! blob, concurrent pushes of one blob both succeed, and SIGTERM drains in-flight
//! uploads. Tests that restart the server skip themselves against an external registry.

use crate::common::TestApp;
use crate::helpers::*;
use bytes::Bytes;
use reqwest::Url;
use serde_json::{json, Value};
use std::time::Duration;

type Chunk = Result<Bytes, std::io::Error>;

/// A request body fed through a channel, so a test controls when bytes are sent.
fn channel_body() -> (tokio::sync::mpsc::Sender<Chunk>, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(2);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, reqwest::Body::wrap_stream(stream))
}

struct Pushed {
    repo: String,
    img: Image,
    blob: Vec<u8>,
    blob_digest: String,
    sig: Vec<u8>,
    sig_digest: String,
}

async fn push_everything(app: &TestApp) -> Pushed {
    let repo = unique_repo("durable");
    let img = push_image(app, &repo, "v1").await;
    put_manifest_ok(app, &repo, "stable", OCI_MANIFEST, &img.manifest).await;
    let blob = random_bytes(50_000);
    let blob_digest = push_blob(app, &repo, &blob).await;
    let (sig, sig_digest) = make_artifact(
        app,
        &repo,
        "application/vnd.example.signature.v1",
        json!({"subject": subject(OCI_MANIFEST, &img.manifest)}),
    )
    .await;
    put_manifest_ok(app, &repo, &sig_digest, OCI_MANIFEST, &sig).await;
    Pushed {
        repo,
        img,
        blob,
        blob_digest,
        sig,
        sig_digest,
    }
}

async fn assert_everything(app: &TestApp, p: &Pushed) {
    let repo = &p.repo;
    assert_manifest(app, repo, "v1", OCI_MANIFEST, &p.img.manifest).await;
    assert_manifest(app, repo, "stable", OCI_MANIFEST, &p.img.manifest).await;
    assert_manifest(app, repo, &p.img.digest, OCI_MANIFEST, &p.img.manifest).await;
    assert_manifest(app, repo, &p.sig_digest, OCI_MANIFEST, &p.sig).await;
    assert_blob(app, repo, &p.img.config_digest, &p.img.config).await;
    for (data, digest) in &p.img.layers {
        assert_blob(app, repo, digest, data).await;
    }
    assert_blob(app, repo, &p.blob_digest, &p.blob).await;

    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["tags"], json!(["stable", "v1"]));

    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/referrers/{}", p.img.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["manifests"][0]["digest"], json!(p.sig_digest));
}

#[tokio::test]
async fn blobs_manifests_and_tags_survive_a_restart() {
    if skip_external(
        "blobs_manifests_and_tags_survive_a_restart",
        "restarts the server",
    ) {
        return;
    }
    let mut app = TestApp::start().await;
    let pushed = push_everything(&app).await;
    app.restart().await;
    assert_everything(&app, &pushed).await;
}

#[tokio::test]
async fn acknowledged_pushes_survive_sigkill() {
    if skip_external("acknowledged_pushes_survive_sigkill", "kills the server") {
        return;
    }
    let mut app = TestApp::start().await;
    let pushed = push_everything(&app).await;
    app.kill_and_restart().await;
    assert_everything(&app, &pushed).await;
}

#[tokio::test]
async fn deletes_survive_a_restart() {
    if skip_external("deletes_survive_a_restart", "restarts the server") {
        return;
    }
    let mut app = TestApp::start().await;
    let repo = unique_repo("durable");
    let img = push_image(&app, &repo, "v1").await;
    put_manifest_ok(&app, &repo, "gone", OCI_MANIFEST, &img.manifest).await;
    let blob = push_blob(&app, &repo, &random_bytes(100)).await;
    let del = |p: String| app.client.delete(app.url(&p)).send();
    assert_eq!(
        del(format!("/v2/{repo}/manifests/gone"))
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        del(format!("/v2/{repo}/blobs/{blob}"))
            .await
            .unwrap()
            .status(),
        202
    );
    app.kill_and_restart().await;
    assert_eq!(get_manifest(&app, &repo, "gone").await.status(), 404);
    assert_eq!(head_blob(&app, &repo, &blob).await.status(), 404);
    assert_manifest(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn upload_session_can_be_resumed_after_sigkill() {
    if skip_external(
        "upload_session_can_be_resumed_after_sigkill",
        "kills the server",
    ) {
        return;
    }
    let mut app = TestApp::start().await;
    let repo = unique_repo("durable");
    let data = random_bytes(300_000);
    let digest = sha256_digest(&data);
    let upload = start_upload(&app, &repo).await;
    let resp = app
        .client
        .patch(upload)
        .header("content-type", "application/octet-stream")
        .header("content-range", "0-99999")
        .body(data[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let upload = location(&resp);

    app.kill_and_restart().await;

    let resp = app.client.get(upload).send().await.unwrap();
    assert_eq!(resp.status(), 204, "the session outlives the process");
    assert_eq!(header(&resp, "range").as_deref(), Some("0-99999"));
    let upload = location(&resp);
    let resp = app
        .client
        .patch(upload)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("100000-{}", data.len() - 1))
        .body(data[100_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = app
        .client
        .put(with_query(location(&resp), "digest", &digest))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_blob(&app, &repo, &digest, &data).await;
}

#[tokio::test]
async fn patch_in_flight_at_sigkill_leaves_no_blob() {
    if skip_external(
        "patch_in_flight_at_sigkill_leaves_no_blob",
        "kills the server",
    ) {
        return;
    }
    let mut app = TestApp::start().await;
    let repo = unique_repo("durable");
    let data = random_bytes(1 << 20);
    let digest = sha256_digest(&data);
    let half = data.len() / 2;
    let upload = start_upload(&app, &repo).await;

    let (tx, body) = channel_body();
    let patch = tokio::spawn(
        app.client
            .patch(upload.clone())
            .header("content-type", "application/octet-stream")
            .body(body)
            .send(),
    );
    for chunk in data[..half].chunks(64 * 1024) {
        tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.kill_and_restart().await;
    drop(tx);
    let _ = patch.await.unwrap(); // failed with the connection: no answer to check

    assert_eq!(head_blob(&app, &repo, &digest).await.status(), 404);
    assert_eq!(
        head_blob(&app, &repo, &sha256_digest(&data[..half]))
            .await
            .status(),
        404,
        "the partial data must not become a blob"
    );

    // The session is either gone, or resumable from exactly the offset it reports.
    let resp = app.client.get(upload).send().await.unwrap();
    match resp.status().as_u16() {
        404 => {
            eprintln!("interrupted session is gone");
            assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
        }
        204 => {
            let reported = upload_range_end(&resp) as usize + 1;
            eprintln!("interrupted session survived, reporting {reported} of {half} bytes sent");
            let loc = location(&resp);
            assert!(
                reported <= half,
                "session reports {reported} bytes, only {half} were sent"
            );
            // "0-0" is ambiguous (nothing, or one byte): try one byte, then nothing.
            let mut offsets = vec![reported];
            if reported == 1 {
                offsets.push(0);
            }
            let mut resumed: Option<Url> = None;
            for offset in offsets {
                let resp = app
                    .client
                    .patch(loc.clone())
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{offset}-{}", data.len() - 1))
                    .body(data[offset..].to_vec())
                    .send()
                    .await
                    .unwrap();
                if resp.status() == 202 {
                    resumed = Some(location(&resp));
                    break;
                }
                assert_eq!(resp.status(), 416, "resume at {offset}");
            }
            let loc = resumed.expect("the session could not be resumed at the offset it reported");
            let resp = app
                .client
                .put(with_query(loc, "digest", &digest))
                .header("content-length", "0")
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            assert_eq!(
                status, 201,
                "after resuming, the session holds exactly the bytes it reported: {text}"
            );
            assert_blob(&app, &repo, &digest, &data).await;
        }
        other => panic!("GET on the interrupted session: {other}"),
    }
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_blob_both_succeed() {
    let app = TestApp::start().await;
    let repo = unique_repo("race");
    let data = random_bytes(4 << 20);
    let digest = sha256_digest(&data);

    // POST+PUT: the commits race.
    let a = start_upload(&app, &repo).await;
    let b = start_upload(&app, &repo).await;
    let put = |u: Url| {
        app.client
            .put(with_query(u, "digest", &digest))
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()
    };
    let (ra, rb) = tokio::join!(put(a), put(b));
    assert_eq!(ra.unwrap().status(), 201);
    assert_eq!(rb.unwrap().status(), 201);
    assert_blob(&app, &repo, &digest, &data).await;

    // Single POSTs into another repository, four at once.
    let repo2 = unique_repo("race");
    let post = || {
        app.client
            .post(with_query(
                url(&app, &format!("/v2/{repo2}/blobs/uploads/")),
                "digest",
                &digest,
            ))
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()
    };
    let (r1, r2, r3, r4) = tokio::join!(post(), post(), post(), post());
    for r in [r1, r2, r3, r4] {
        assert_eq!(r.unwrap().status(), 201);
    }
    assert_blob(&app, &repo2, &digest, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_upload_finish() {
    if skip_external(
        "sigterm_lets_an_in_flight_upload_finish",
        "stops the server",
    ) {
        return;
    }
    let mut app = TestApp::start().await;
    let repo = unique_repo("drain");
    let data = random_bytes(200 * 1024);
    let digest = sha256_digest(&data);
    let upload = start_upload(&app, &repo).await;

    let (tx, body) = channel_body();
    let put = tokio::spawn(
        app.client
            .put(with_query(upload, "digest", &digest))
            .header("content-type", "application/octet-stream")
            .header("content-length", data.len().to_string())
            .body(body)
            .send(),
    );
    // Feed the body slowly (2 s) from another task while the server is told to stop.
    let feed = {
        let data = data.clone();
        tokio::spawn(async move {
            for chunk in data.chunks(10 * 1024) {
                if tx.send(Ok(Bytes::copy_from_slice(chunk))).await.is_err() {
                    break; // the request is gone; the PUT's answer says why
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!put.is_finished(), "the upload should still be in flight");

    let exit = tokio::task::block_in_place(|| app.terminate());
    feed.await.unwrap();
    let resp = put
        .await
        .unwrap()
        .expect("the in-flight PUT gets an answer");
    assert_eq!(
        resp.status(),
        201,
        "SIGTERM must let the in-flight upload finish"
    );
    assert!(
        exit.success(),
        "berth should exit cleanly on SIGTERM, got {exit}"
    );

    app.respawn().await;
    let resp = head_blob(&app, &repo, &digest).await;
    assert_eq!(resp.status(), 200);
    assert_blob(&app, &repo, &digest, &data).await;
}
