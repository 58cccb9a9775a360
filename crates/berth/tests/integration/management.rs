//! Content management: deleting manifests (by digest and by tag) and blobs.

use crate::common::TestApp;
use crate::helpers::*;
use serde_json::{json, Value};

async fn delete(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.delete(app.url(path)).send().await.unwrap()
}

pub(crate) async fn tags(app: &TestApp, repo: &str) -> Option<Vec<String>> {
    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    if resp.status() == 404 {
        return None;
    }
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    Some(
        v["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn delete_manifest_by_digest_is_202_then_404_for_digest_and_tags() {
    let app = TestApp::start().await;
    let repo = unique_repo("delete");
    let img = push_image(&app, &repo, "v1").await;
    put_manifest_ok(&app, &repo, "v1-alias", OCI_MANIFEST, &img.manifest).await;
    let keep = push_image(&app, &repo, "keep").await;

    let resp = delete(&app, &format!("/v2/{repo}/manifests/{}", img.digest)).await;
    assert_eq!(resp.status(), 202);

    assert_oci_error(
        get_manifest(&app, &repo, &img.digest).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_oci_error(
        get_manifest(&app, &repo, "v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_oci_error(
        get_manifest(&app, &repo, "v1-alias").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(head_manifest(&app, &repo, &img.digest).await.status(), 404);
    assert_eq!(tags(&app, &repo).await, Some(vec!["keep".to_string()]));
    assert_manifest(&app, &repo, &keep.digest, OCI_MANIFEST, &keep.manifest).await;

    // Deleting it again: it is unknown now.
    let resp = delete(&app, &format!("/v2/{repo}/manifests/{}", img.digest)).await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn delete_by_tag_removes_only_the_tag() {
    let app = TestApp::start().await;
    let repo = unique_repo("delete");
    let img = push_image(&app, &repo, "v1").await;
    put_manifest_ok(&app, &repo, "stable", OCI_MANIFEST, &img.manifest).await;

    let resp = delete(&app, &format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(resp.status(), 202);

    assert_oci_error(
        get_manifest(&app, &repo, "v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_manifest(&app, &repo, &img.digest, OCI_MANIFEST, &img.manifest).await;
    assert_manifest(&app, &repo, "stable", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(tags(&app, &repo).await, Some(vec!["stable".to_string()]));
}

#[tokio::test]
async fn delete_unknown_tag_or_manifest_is_404_manifest_unknown() {
    let app = TestApp::start().await;
    let repo = unique_repo("delete");
    push_image(&app, &repo, "v1").await;
    let resp = delete(&app, &format!("/v2/{repo}/manifests/nope")).await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
    let resp = delete(
        &app,
        &format!("/v2/{repo}/manifests/{}", sha256_digest(b"never pushed")),
    )
    .await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn delete_manifest_in_unknown_repository_is_404() {
    let app = TestApp::start().await;
    let repo = unique_repo("nothing-here");
    let resp = delete(
        &app,
        &format!("/v2/{repo}/manifests/{}", sha256_digest(b"never pushed")),
    )
    .await;
    assert_oci_error_in(resp, &[404], &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"]).await;
}

#[tokio::test]
async fn delete_blob_is_202_then_404_in_that_repository() {
    let app = TestApp::start().await;
    let repo = unique_repo("delete");
    let data = random_bytes(1000);
    let digest = push_blob(&app, &repo, &data).await;

    let resp = delete(&app, &format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(head_blob(&app, &repo, &digest).await.status(), 404);
    assert_oci_error(get_blob(&app, &repo, &digest).await, 404, "BLOB_UNKNOWN").await;

    let resp = delete(&app, &format!("/v2/{repo}/blobs/{digest}")).await;
    assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn delete_unknown_blob_is_404_blob_unknown() {
    let app = TestApp::start().await;
    let repo = unique_repo("delete");
    push_blob(&app, &repo, &random_bytes(10)).await;
    let resp = delete(
        &app,
        &format!("/v2/{repo}/blobs/{}", sha256_digest(b"never pushed")),
    )
    .await;
    assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn deleting_a_mounted_blob_leaves_the_source_repository_alone() {
    let app = TestApp::start().await;
    let a = unique_repo("delete-a");
    let b = unique_repo("delete-b");
    let data = random_bytes(1000);
    let digest = push_blob(&app, &a, &data).await;
    let u = with_query(
        with_query(
            url(&app, &format!("/v2/{b}/blobs/uploads/")),
            "mount",
            &digest,
        ),
        "from",
        &a,
    );
    let resp = app.client.post(u).send().await.unwrap();
    assert_eq!(resp.status(), 201);

    let resp = delete(&app, &format!("/v2/{b}/blobs/{digest}")).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(head_blob(&app, &b, &digest).await.status(), 404);
    assert_blob(&app, &a, &digest, &data).await;
}

#[tokio::test]
async fn deleting_a_blob_pushed_twice_to_two_repositories_keeps_the_other_copy() {
    let app = TestApp::start().await;
    let a = unique_repo("delete-a");
    let b = unique_repo("delete-b");
    let data = random_bytes(1000);
    let digest = push_blob(&app, &a, &data).await;
    push_blob(&app, &b, &data).await;

    let resp = delete(&app, &format!("/v2/{a}/blobs/{digest}")).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(head_blob(&app, &a, &digest).await.status(), 404);
    assert_blob(&app, &b, &digest, &data).await;
}

#[tokio::test]
async fn deleted_referrer_disappears_from_the_referrers_list() {
    let app = TestApp::start().await;
    let repo = unique_repo("delete");
    let img = push_image(&app, &repo, "v1").await;
    let subj = subject(OCI_MANIFEST, &img.manifest);
    let (a, a_d) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.a",
        json!({"subject": subj}),
    )
    .await;
    put_manifest_ok(&app, &repo, &a_d, OCI_MANIFEST, &a).await;
    let (b, b_d) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.b",
        json!({"subject": subj}),
    )
    .await;
    put_manifest_ok(&app, &repo, &b_d, OCI_MANIFEST, &b).await;

    let resp = delete(&app, &format!("/v2/{repo}/manifests/{a_d}")).await;
    assert_eq!(resp.status(), 202);

    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/referrers/{}", img.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let digests: Vec<&str> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [b_d.as_str()]);
}

#[tokio::test]
async fn a_deleted_manifest_can_be_pushed_again() {
    let app = TestApp::start().await;
    let repo = unique_repo("delete");
    let img = push_image(&app, &repo, "v1").await;
    let resp = delete(&app, &format!("/v2/{repo}/manifests/{}", img.digest)).await;
    assert_eq!(resp.status(), 202);
    put_manifest_ok(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
    assert_manifest(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
}
