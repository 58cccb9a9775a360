//! Storage quotas per namespace (issue 6): a push that would take a namespace past its
//! quota is refused with a clear error before its data is stored, by every way of
//! pushing; deleting is always allowed; quotas show in the usage API and the CLI.

use crate::common::TestApp;
use crate::helpers::*;

async fn set_quota(app: &TestApp, ns: &str, bytes: u64) {
    let resp = app
        .client
        .put(app.url(&format!("/api/v1/quotas/{ns}")))
        .json(&serde_json::json!({ "bytes": bytes }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        204,
        "set quota: {}",
        resp.text().await.unwrap()
    );
}

async fn assert_quota_refusal(resp: reqwest::Response) {
    let body = assert_oci_error(resp, 403, "DENIED").await;
    let msg = body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("quota exceeded") && msg.contains("namespace q "),
        "{msg}"
    );
}

#[tokio::test]
async fn pushes_past_the_quota_are_refused_before_anything_is_stored() {
    let app = TestApp::start().await;
    if skip_external("quota", "sets quotas through Berth's management API") {
        return;
    }
    set_quota(&app, "q", 10_000).await;
    let repo = "q/app";
    // Within the quota: fine.
    let small = random_bytes(4_000);
    let small_digest = push_blob(&app, repo, &small).await;

    // Monolithic POST ?digest= with a length past the quota: refused, nothing stored.
    let big = random_bytes(8_000);
    let big_digest = sha256_digest(&big);
    let resp = app
        .client
        .post(app.url(&format!("/v2/{repo}/blobs/uploads/?digest={big_digest}")))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_quota_refusal(resp).await;
    assert_eq!(head_blob(&app, repo, &big_digest).await.status(), 404);

    // POST then PUT with the body: the session opens, the PUT is refused.
    let upload = start_upload(&app, repo).await;
    let resp = app
        .client
        .put(with_query(upload.clone(), "digest", &big_digest))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_quota_refusal(resp).await;
    assert_eq!(head_blob(&app, repo, &big_digest).await.status(), 404);

    // A chunk whose Content-Length does not fit: refused before it is read; the session
    // is still there, with nothing in it.
    let upload = start_upload(&app, repo).await;
    let resp = app
        .client
        .patch(upload.clone())
        .header("content-range", format!("0-{}", big.len() - 1))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_quota_refusal(resp).await;
    let status = app.client.get(upload.clone()).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(header(&status, "range").as_deref(), Some("0-0"));

    // A stream without a length: refused once it is past the quota, and the session
    // is cancelled (its bytes never become a blob).
    let upload = start_upload(&app, repo).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let resp = app
        .client
        .patch(upload.clone())
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_quota_refusal(resp).await;
    assert_eq!(app.client.get(upload).send().await.unwrap().status(), 404);

    // Cross-repository mount of a blob the namespace lacks: refused too.
    let other = random_bytes(8_000);
    let other_digest = push_blob(&app, "elsewhere/app", &other).await;
    let resp = app
        .client
        .post(app.url(&format!(
            "/v2/{repo}/blobs/uploads/?mount={other_digest}&from=elsewhere/app"
        )))
        .send()
        .await
        .unwrap();
    assert_quota_refusal(resp).await;

    // A blob the namespace already holds adds nothing: mounting it into another of its
    // repositories (what clients do first) works even at the limit; a new session
    // does not.
    set_quota(&app, "q", 4_000).await;
    let resp = app
        .client
        .post(app.url(&format!(
            "/v2/q/other/blobs/uploads/?mount={small_digest}&from={repo}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(
        head_blob(&app, "q/other", &small_digest).await.status(),
        200
    );
    let resp = app
        .client
        .post(app.url("/v2/q/other/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_quota_refusal(resp).await;

    // The usage API shows the quota.
    let usage: serde_json::Value = app
        .client
        .get(app.url("/api/v1/usage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let q = usage["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == "q")
        .unwrap();
    assert_eq!(q["quota"], 4000);
    assert_eq!(q["bytes"], 4000);
}

#[tokio::test]
async fn deleting_is_allowed_over_quota_and_a_manifest_past_it_is_refused() {
    let app = TestApp::start().await;
    if skip_external("quota", "sets quotas through Berth's management API") {
        return;
    }
    let img = push_image(&app, "full/app", "v1").await;
    // The quota drops below what is stored: new manifests are refused ...
    set_quota(&app, "full", 1).await;
    let extra = make_image(&app, "elsewhere/x").await; // blobs pushed elsewhere
    let resp = app
        .client
        .put(app.url("/v2/full/app/manifests/v2"))
        .header("content-type", extra.media_type)
        .body(extra.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // ... re-tagging what is already there adds nothing and works ...
    put_manifest_ok(&app, "full/app", "again", img.media_type, &img.manifest).await;
    // ... and deleting works.
    let resp = app
        .client
        .delete(app.url(&format!("/v2/full/app/manifests/{}", img.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // Removing the quota lifts the limit.
    let resp = app
        .client
        .delete(app.url("/api/v1/quotas/full"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    push_image(&app, "full/app", "v3").await;
}

#[tokio::test]
async fn only_admins_set_quotas_and_the_cli_lists_them() {
    let app = TestApp::builder().auth().start().await;
    app.cli_ok(
        &["user", "add", "alice", "--password-stdin"],
        Some("alice-password-1\n"),
    );
    let alice = app.basic_client("alice", "alice-password-1");
    let resp = alice
        .put(app.url("/api/v1/quotas/alice"))
        .json(&serde_json::json!({ "bytes": 1u64 << 40 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = app
        .basic_client("admin", crate::common::ADMIN_PASSWORD)
        .put(app.url("/api/v1/quotas/Not..Valid"))
        .json(&serde_json::json!({ "bytes": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "not a namespace name");
    let resp = app
        .basic_client("admin", crate::common::ADMIN_PASSWORD)
        .put(app.url("/api/v1/quotas/alice"))
        .json(&serde_json::json!({ "bytes": -1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "a negative quota");

    let out = app.cli_ok(&["quota", "set", "alice", "2GiB"], None);
    assert!(out.contains("quota of alice: 2.0 GiB"), "{out}");
    let out = app.cli_ok(&["quota", "ls"], None);
    let line = out
        .lines()
        .find(|l| l.starts_with("alice"))
        .unwrap_or_default();
    assert!(line.contains("2.0 GiB"), "{out}");
    let bad = app.cli(&["quota", "set", "alice", "lots"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid size"));
    app.cli_ok(&["quota", "rm", "alice"], None);
    assert!(!app.cli_ok(&["quota", "ls"], None).contains("2.0 GiB"));
}
