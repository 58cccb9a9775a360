//! Pull workflow: manifests and blobs by tag and digest, HEAD, range requests, and the
//! 404s for content that is not there (spec "Pull", end-2 and end-3).

use crate::common::TestApp;
use crate::helpers::*;

#[tokio::test]
async fn manifest_get_by_tag_returns_the_exact_bytes_with_digest_type_and_length() {
    let app = TestApp::start().await;
    let repo = unique_repo("pull");
    let img = push_image(&app, &repo, "v1").await;

    let resp = get_manifest(&app, &repo, "v1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(img.digest.clone())
    );
    assert_eq!(header(&resp, "content-type").as_deref(), Some(OCI_MANIFEST));
    assert_eq!(
        header(&resp, "content-length"),
        Some(img.manifest.len().to_string())
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        &body[..],
        &img.manifest[..],
        "manifest bytes must be stored as pushed"
    );
}

#[tokio::test]
async fn manifest_get_by_digest_returns_the_exact_bytes() {
    let app = TestApp::start().await;
    let repo = unique_repo("pull");
    let img = push_image(&app, &repo, "v1").await;

    let resp = get_manifest(&app, &repo, &img.digest).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(img.digest.clone())
    );
    assert_eq!(header(&resp, "content-type").as_deref(), Some(OCI_MANIFEST));
    assert_eq!(
        header(&resp, "content-length"),
        Some(img.manifest.len().to_string())
    );
    assert_eq!(&resp.bytes().await.unwrap()[..], &img.manifest[..]);
}

#[tokio::test]
async fn manifest_head_by_tag_and_digest_has_headers_and_no_body() {
    let app = TestApp::start().await;
    let repo = unique_repo("pull");
    let img = push_image(&app, &repo, "v1").await;

    for reference in ["v1", img.digest.as_str()] {
        let resp = head_manifest(&app, &repo, reference).await;
        assert_eq!(resp.status(), 200, "HEAD manifest {reference}");
        assert_eq!(
            header(&resp, "docker-content-digest"),
            Some(img.digest.clone()),
            "HEAD {reference}: Docker-Content-Digest"
        );
        assert_eq!(
            header(&resp, "content-type").as_deref(),
            Some(OCI_MANIFEST),
            "HEAD {reference}: Content-Type"
        );
        assert_eq!(
            header(&resp, "content-length"),
            Some(img.manifest.len().to_string()),
            "HEAD {reference}: Content-Length is the manifest size"
        );
        assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");
    }
}

#[tokio::test]
async fn blob_get_and_head_return_content_digest_and_length() {
    let app = TestApp::start().await;
    let repo = unique_repo("pull");
    let data = random_bytes(10_000);
    let digest = push_blob(&app, &repo, &data).await;

    let resp = get_blob(&app, &repo, &digest).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    assert_eq!(header(&resp, "content-length"), Some("10000".to_string()));
    assert_eq!(&resp.bytes().await.unwrap()[..], &data[..]);

    let resp = head_blob(&app, &repo, &digest).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    assert_eq!(header(&resp, "content-length"), Some("10000".to_string()));
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");
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
async fn blob_range_requests_answer_206_with_content_range() {
    let app = TestApp::start().await;
    let repo = unique_repo("pull");
    let data = random_bytes(1000);
    let digest = push_blob(&app, &repo, &data).await;

    // (Range header, first byte, last byte)
    let cases = [
        ("bytes=0-99", 0usize, 99usize),
        ("bytes=100-199", 100, 199),
        ("bytes=990-", 990, 999),
        ("bytes=-10", 990, 999),
        ("bytes=500-5000", 500, 999),
        ("bytes=999-999", 999, 999),
    ];
    for (range, first, last) in cases {
        let resp = get_range(&app, &repo, &digest, range).await;
        assert_eq!(resp.status(), 206, "Range: {range}");
        assert_eq!(
            header(&resp, "content-range"),
            Some(format!("bytes {first}-{last}/1000")),
            "Range: {range}"
        );
        assert_eq!(
            header(&resp, "content-length"),
            Some((last - first + 1).to_string()),
            "Range: {range}"
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(&body[..], &data[first..=last], "Range: {range}");
    }
}

#[tokio::test]
async fn unsatisfiable_blob_range_is_416() {
    let app = TestApp::start().await;
    let repo = unique_repo("pull");
    let data = random_bytes(1000);
    let digest = push_blob(&app, &repo, &data).await;

    for range in ["bytes=1000-", "bytes=2000-3000"] {
        let resp = get_range(&app, &repo, &digest, range).await;
        assert_eq!(resp.status(), 416, "Range: {range}");
        // RFC 9110 §15.5.17: a 416 to a byte-range request SHOULD carry
        // `Content-Range: bytes */<complete-length>`.
        assert_eq!(
            header(&resp, "content-range").as_deref(),
            Some("bytes */1000"),
            "Range: {range}"
        );
    }
}

#[tokio::test]
async fn unknown_manifest_is_404_manifest_unknown() {
    let app = TestApp::start().await;
    let repo = unique_repo("pull");
    push_image(&app, &repo, "v1").await;

    let resp = get_manifest(&app, &repo, "no-such-tag").await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;

    let missing = sha256_digest(b"no such manifest");
    let resp = get_manifest(&app, &repo, &missing).await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;

    let resp = head_manifest(&app, &repo, "no-such-tag").await;
    assert_eq!(resp.status(), 404);
    let resp = head_manifest(&app, &repo, &missing).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn manifest_in_unknown_repository_is_404() {
    let app = TestApp::start().await;
    let repo = unique_repo("nothing-here");
    let resp = get_manifest(&app, &repo, "latest").await;
    assert_oci_error_in(resp, &[404], &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"]).await;
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let app = TestApp::start().await;
    let repo = unique_repo("pull");
    push_blob(&app, &repo, &random_bytes(10)).await;
    let missing = sha256_digest(b"no such blob");

    let resp = get_blob(&app, &repo, &missing).await;
    assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
    let resp = head_blob(&app, &repo, &missing).await;
    assert_eq!(resp.status(), 404);
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");
}

#[tokio::test]
async fn blob_in_unknown_repository_is_404() {
    let app = TestApp::start().await;
    let repo = unique_repo("nothing-here");
    let resp = get_blob(&app, &repo, &sha256_digest(b"x")).await;
    assert_oci_error_in(resp, &[404], &["BLOB_UNKNOWN", "NAME_UNKNOWN"]).await;
}

#[tokio::test]
async fn blob_pushed_to_one_repository_is_not_served_from_another() {
    let app = TestApp::start().await;
    let a = unique_repo("scope-a");
    let b = unique_repo("scope-b");
    let data = random_bytes(100);
    let digest = push_blob(&app, &a, &data).await;
    // b exists too, with other content.
    push_blob(&app, &b, &random_bytes(100)).await;

    let resp = get_blob(&app, &b, &digest).await;
    assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
    assert_eq!(head_blob(&app, &b, &digest).await.status(), 404);
}

#[tokio::test]
async fn manifest_pushed_to_one_repository_is_not_served_from_another() {
    let app = TestApp::start().await;
    let a = unique_repo("scope-a");
    let b = unique_repo("scope-b");
    let img = push_image(&app, &a, "v1").await;
    push_image(&app, &b, "v1").await;

    let resp = get_manifest(&app, &b, &img.digest).await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
}
