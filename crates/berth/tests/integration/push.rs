//! Push workflow: every way of uploading a blob (single POST, POST+PUT, streamed PATCH,
//! chunked PATCH with Content-Range), upload status and cancel, cross-repository mounts,
//! and manifest PUT for every manifest kind with its validation errors.

use crate::common::TestApp;
use crate::helpers::*;
use reqwest::{Response, Url};
use serde_json::json;

fn uploads_url(app: &TestApp, repo: &str) -> Url {
    url(app, &format!("/v2/{repo}/blobs/uploads/"))
}

async fn patch_chunk(app: &TestApp, upload: Url, chunk: &[u8], start: usize) -> Response {
    let end = start + chunk.len() - 1;
    app.client
        .patch(upload)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{end}"))
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
}

/// PUT `<upload>?digest=` with no body, closing a session whose data was PATCHed.
async fn close_upload(app: &TestApp, upload: Url, digest: &str) -> Response {
    app.client
        .put(with_query(upload, "digest", digest))
        .header("content-length", "0")
        .send()
        .await
        .unwrap()
}

async fn get_upload(app: &TestApp, upload: Url) -> Response {
    app.client.get(upload).send().await.unwrap()
}

/// Asserts a 201 for a finished blob upload whose `Location` serves `data`.
async fn assert_blob_created(app: &TestApp, resp: Response, digest: &str, data: &[u8]) {
    let status = resp.status();
    let dcd = header(&resp, "docker-content-digest");
    let loc = header(&resp, "location").map(|_| location(&resp));
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 201, "blob upload should be created: {text}");
    if let Some(dcd) = dcd {
        assert_eq!(dcd, digest, "Docker-Content-Digest of the created blob");
    }
    let loc = loc.expect("201 for a blob upload must carry Location");
    let resp = app.client.get(loc.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {loc} (the blob's Location)");
    assert!(
        resp.bytes().await.unwrap()[..] == data[..],
        "GET {loc}: content differs"
    );
}

// ---------------------------------------------------------------------------------
// Blob uploads

#[tokio::test]
async fn monolithic_single_post_with_digest_creates_the_blob() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(5000);
    let digest = sha256_digest(&data);

    let resp = app
        .client
        .post(with_query(uploads_url(&app, &repo), "digest", &digest))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_blob_created(&app, resp, &digest, &data).await;
    assert_blob(&app, &repo, &digest, &data).await;
}

#[tokio::test]
async fn post_then_put_creates_the_blob() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(5000);
    let digest = sha256_digest(&data);

    let resp = app
        .client
        .post(uploads_url(&app, &repo))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let uuid = header(&resp, "docker-upload-uuid").expect("POST upload: Docker-Upload-UUID");
    assert!(!uuid.is_empty());
    let upload = location(&resp);
    assert!(
        upload.as_str().contains(&uuid),
        "upload Location {upload} should contain the session id {uuid}"
    );

    let resp = app
        .client
        .put(with_query(upload, "digest", &digest))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_blob_created(&app, resp, &digest, &data).await;
}

#[tokio::test]
async fn streamed_patch_without_content_range_then_put() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(100_000);
    let digest = sha256_digest(&data);
    let upload = start_upload(&app, &repo).await;

    // No Content-Length, no Content-Range: a chunked-encoded stream.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = data
        .chunks(7000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let resp = app
        .client
        .patch(upload)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(upload_range_end(&resp), data.len() as u64 - 1);
    let upload = location(&resp);

    let resp = close_upload(&app, upload, &digest).await;
    assert_blob_created(&app, resp, &digest, &data).await;
}

#[tokio::test]
async fn chunked_upload_with_content_range_and_final_chunk_in_put() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(250);
    let digest = sha256_digest(&data);
    let upload = start_upload(&app, &repo).await;

    let resp = patch_chunk(&app, upload, &data[0..100], 0).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-99"));
    let upload = location(&resp);

    let resp = patch_chunk(&app, upload, &data[100..200], 100).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-199"));
    let upload = location(&resp);

    let resp = app
        .client
        .put(with_query(upload, "digest", &digest))
        .header("content-type", "application/octet-stream")
        .header("content-range", "200-249")
        .body(data[200..].to_vec())
        .send()
        .await
        .unwrap();
    assert_blob_created(&app, resp, &digest, &data).await;
}

#[tokio::test]
async fn chunked_upload_closed_by_empty_put() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(3 * 1024 + 17);
    let digest = sha256_digest(&data);
    let mut upload = start_upload(&app, &repo).await;
    for (i, chunk) in data.chunks(1024).enumerate() {
        let resp = patch_chunk(&app, upload, chunk, i * 1024).await;
        assert_eq!(resp.status(), 202, "chunk {i}");
        assert_eq!(
            upload_range_end(&resp),
            (i * 1024 + chunk.len() - 1) as u64,
            "chunk {i}"
        );
        upload = location(&resp);
    }
    let resp = close_upload(&app, upload, &digest).await;
    assert_blob_created(&app, resp, &digest, &data).await;
}

#[tokio::test]
async fn out_of_order_chunk_is_416_and_the_session_can_continue() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(300);
    let digest = sha256_digest(&data);
    let upload = start_upload(&app, &repo).await;

    let resp = patch_chunk(&app, upload, &data[0..100], 0).await;
    assert_eq!(resp.status(), 202);
    let upload = location(&resp);

    // Skips bytes 100..150.
    let resp = patch_chunk(&app, upload.clone(), &data[150..200], 150).await;
    assert_eq!(
        resp.status(),
        416,
        "a chunk that skips ahead must be refused"
    );

    // Recover with GET: the session still holds bytes 0-99.
    let resp = get_upload(&app, upload).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-99"));
    let upload = location(&resp);

    let resp = patch_chunk(&app, upload, &data[100..300], 100).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-299"));
    let resp = close_upload(&app, location(&resp), &digest).await;
    assert_blob_created(&app, resp, &digest, &data).await;
}

#[tokio::test]
async fn repeated_or_overlapping_chunk_is_416() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(200);
    let digest = sha256_digest(&data);
    let upload = start_upload(&app, &repo).await;

    let resp = patch_chunk(&app, upload, &data[0..100], 0).await;
    assert_eq!(resp.status(), 202);
    let upload = location(&resp);

    let resp = patch_chunk(&app, upload.clone(), &data[0..100], 0).await;
    assert_eq!(resp.status(), 416, "the same chunk again must be refused");
    let resp = patch_chunk(&app, upload.clone(), &data[50..150], 50).await;
    assert_eq!(resp.status(), 416, "an overlapping chunk must be refused");

    // The refused chunks left the session as it was.
    let resp = get_upload(&app, upload.clone()).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-99"));

    let resp = patch_chunk(&app, upload, &data[100..200], 100).await;
    assert_eq!(resp.status(), 202);
    let resp = close_upload(&app, location(&resp), &digest).await;
    assert_blob_created(&app, resp, &digest, &data).await;
}

#[tokio::test]
async fn first_chunk_not_starting_at_zero_is_416() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(100);
    let upload = start_upload(&app, &repo).await;
    let resp = patch_chunk(&app, upload, &data[10..20], 10).await;
    assert_eq!(resp.status(), 416);
}

#[tokio::test]
async fn upload_status_is_204_with_range_location_and_uuid() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(1234);
    let upload = start_upload(&app, &repo).await;
    let resp = patch_chunk(&app, upload, &data, 0).await;
    assert_eq!(resp.status(), 202);
    let upload = location(&resp);

    let resp = get_upload(&app, upload).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        header(&resp, "range").as_deref(),
        Some("0-1233"),
        "Range is the inclusive offset of the last byte received"
    );
    let uuid = header(&resp, "docker-upload-uuid").expect("Docker-Upload-UUID");
    let loc = location(&resp);
    assert!(
        loc.as_str().contains(&uuid),
        "Location {loc} should contain the session id {uuid}"
    );
    assert!(resp.bytes().await.unwrap().is_empty(), "204 has no body");

    // The Location from the status request is usable to finish the upload.
    let resp = close_upload(&app, loc, &sha256_digest(&data)).await;
    assert_blob_created(&app, resp, &sha256_digest(&data), &data).await;
}

#[tokio::test]
async fn upload_status_of_a_fresh_session_is_204_with_location() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let upload = start_upload(&app, &repo).await;
    let resp = get_upload(&app, upload).await;
    assert_eq!(resp.status(), 204);
    assert!(
        header(&resp, "docker-upload-uuid").is_some(),
        "Docker-Upload-UUID"
    );
    let loc = location(&resp);
    // The whole blob can still go in one chunk starting at 0.
    let data = random_bytes(10);
    let resp = patch_chunk(&app, loc, &data, 0).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-9"));
}

#[tokio::test]
async fn cancelled_upload_is_gone() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(100);
    let upload = start_upload(&app, &repo).await;
    let resp = patch_chunk(&app, upload, &data, 0).await;
    assert_eq!(resp.status(), 202);
    let upload = location(&resp);

    let resp = app
        .client
        .delete(upload.clone())
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let resp = get_upload(&app, upload.clone()).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = patch_chunk(&app, upload.clone(), &data, 100).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = close_upload(&app, upload, &sha256_digest(&data)).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(
        head_blob(&app, &repo, &sha256_digest(&data)).await.status(),
        404
    );
}

#[tokio::test]
async fn unknown_upload_session_is_404_blob_upload_unknown() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    push_blob(&app, &repo, b"make the repository exist").await;
    let session = uuid::Uuid::new_v4();
    let upload = url(&app, &format!("/v2/{repo}/blobs/uploads/{session}"));

    let resp = get_upload(&app, upload.clone()).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = patch_chunk(&app, upload.clone(), b"abc", 0).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = close_upload(&app, upload.clone(), &sha256_digest(b"")).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = app.client.delete(upload).send().await.unwrap();
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn wrong_digest_at_put_is_400_digest_invalid_and_stores_nothing() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(500);
    let claimed = sha256_digest(b"something else");
    let upload = start_upload(&app, &repo).await;

    let resp = app
        .client
        .put(with_query(upload, "digest", &claimed))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    assert_eq!(head_blob(&app, &repo, &claimed).await.status(), 404);
    assert_eq!(
        head_blob(&app, &repo, &sha256_digest(&data)).await.status(),
        404
    );
}

#[tokio::test]
async fn wrong_digest_after_chunks_is_400_digest_invalid() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(500);
    let claimed = sha256_digest(b"something else");
    let upload = start_upload(&app, &repo).await;
    let resp = patch_chunk(&app, upload, &data, 0).await;
    assert_eq!(resp.status(), 202);
    let resp = close_upload(&app, location(&resp), &claimed).await;
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    assert_eq!(head_blob(&app, &repo, &claimed).await.status(), 404);
}

#[tokio::test]
async fn wrong_digest_on_single_post_is_400_digest_invalid() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let data = random_bytes(500);
    let claimed = sha256_digest(b"something else");
    let resp = app
        .client
        .post(with_query(uploads_url(&app, &repo), "digest", &claimed))
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    assert_eq!(head_blob(&app, &repo, &claimed).await.status(), 404);
}

#[tokio::test]
async fn sha512_digests_work_for_every_upload_method() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");

    // Single POST.
    let data = random_bytes(1000);
    let digest = sha512_digest(&data);
    let resp = app
        .client
        .post(with_query(uploads_url(&app, &repo), "digest", &digest))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_blob_created(&app, resp, &digest, &data).await;

    // POST + PUT.
    let data = random_bytes(1000);
    let digest = sha512_digest(&data);
    push_blob_with_digest(&app, &repo, &data, &digest).await;
    let resp = head_blob(&app, &repo, &digest).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    assert_eq!(header(&resp, "content-length"), Some("1000".to_string()));
    let resp = get_blob(&app, &repo, &digest).await;
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    assert_eq!(&resp.bytes().await.unwrap()[..], &data[..]);

    // Chunked.
    let data = random_bytes(1000);
    let digest = sha512_digest(&data);
    let upload = start_upload(&app, &repo).await;
    let resp = patch_chunk(&app, upload, &data[..600], 0).await;
    assert_eq!(resp.status(), 202);
    let resp = patch_chunk(&app, location(&resp), &data[600..], 600).await;
    assert_eq!(resp.status(), 202);
    let resp = close_upload(&app, location(&resp), &digest).await;
    assert_blob_created(&app, resp, &digest, &data).await;

    // A wrong sha512 is refused like a wrong sha256.
    let claimed = sha512_digest(b"other");
    let upload = start_upload(&app, &repo).await;
    let resp = app
        .client
        .put(with_query(upload, "digest", &claimed))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn empty_blob_can_be_pushed_and_pulled() {
    let app = TestApp::start().await;
    let repo = unique_repo("push");
    let digest = sha256_digest(b"");
    let resp = app
        .client
        .post(with_query(uploads_url(&app, &repo), "digest", &digest))
        .header("content-type", "application/octet-stream")
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_blob_created(&app, resp, &digest, b"").await;
    let resp = head_blob(&app, &repo, &digest).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length").as_deref(), Some("0"));
}

#[tokio::test]
async fn cross_repository_mount_with_from_is_201() {
    let app = TestApp::start().await;
    let a = unique_repo("mount-src");
    let b = unique_repo("mount-dst");
    let data = random_bytes(2000);
    let digest = push_blob(&app, &a, &data).await;

    let u = with_query(
        with_query(uploads_url(&app, &b), "mount", &digest),
        "from",
        &a,
    );
    let resp = app.client.post(u).send().await.unwrap();
    assert_blob_created(&app, resp, &digest, &data).await;
    assert_blob(&app, &b, &digest, &data).await;
    assert_blob(&app, &a, &digest, &data).await;
}

#[tokio::test]
async fn mount_without_from_mounts_a_blob_the_caller_can_read() {
    // The spec lets a registry treat `from` as optional; Berth mounts when the caller can
    // read the blob somewhere, which without auth means whenever it exists.
    let app = TestApp::start().await;
    let a = unique_repo("mount-src");
    let b = unique_repo("mount-dst");
    let data = random_bytes(2000);
    let digest = push_blob(&app, &a, &data).await;

    let resp = app
        .client
        .post(with_query(uploads_url(&app, &b), "mount", &digest))
        .send()
        .await
        .unwrap();
    assert_blob_created(&app, resp, &digest, &data).await;
    assert_blob(&app, &b, &digest, &data).await;
}

#[tokio::test]
async fn mount_of_unknown_blob_starts_an_upload_session() {
    let app = TestApp::start().await;
    let a = unique_repo("mount-src");
    let b = unique_repo("mount-dst");
    push_blob(&app, &a, b"the source repository exists").await;
    let data = random_bytes(700);
    let digest = sha256_digest(&data);

    let u = with_query(
        with_query(uploads_url(&app, &b), "mount", &digest),
        "from",
        &a,
    );
    let resp = app.client.post(u).send().await.unwrap();
    assert_eq!(
        resp.status(),
        202,
        "mounting an unknown blob falls back to an upload"
    );
    let upload = location(&resp);
    let resp = app
        .client
        .put(with_query(upload, "digest", &digest))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_blob_created(&app, resp, &digest, &data).await;
    // Nothing was mounted into the source repository.
    assert_eq!(head_blob(&app, &a, &digest).await.status(), 404);
}

#[tokio::test]
async fn mount_from_unknown_repository_starts_an_upload_session() {
    let app = TestApp::start().await;
    let b = unique_repo("mount-dst");
    let digest = sha256_digest(b"whatever");
    let from = unique_repo("never-created");
    let u = with_query(
        with_query(uploads_url(&app, &b), "mount", &digest),
        "from",
        &from,
    );
    let resp = app.client.post(u).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    location(&resp);
}

// ---------------------------------------------------------------------------------
// Manifests

#[tokio::test]
async fn oci_image_manifest_put_by_tag_is_201_with_location_and_digest() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let img = make_image(&app, &repo).await;

    let resp = put_manifest(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(img.digest.clone())
    );
    let loc = location(&resp);

    // The Location is a pullable manifest URL.
    let resp = app
        .client
        .get(loc.clone())
        .header("accept", ACCEPT_ALL_MANIFESTS)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET {loc}");
    assert_eq!(header(&resp, "content-type").as_deref(), Some(OCI_MANIFEST));
    assert_eq!(&resp.bytes().await.unwrap()[..], &img.manifest[..]);

    assert_manifest(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
    assert_manifest(&app, &repo, &img.digest, OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn manifest_put_by_digest_is_201() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let img = make_image(&app, &repo).await;

    let resp = put_manifest(&app, &repo, &img.digest, OCI_MANIFEST, &img.manifest).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(img.digest.clone())
    );
    let loc = location(&resp);
    let resp = app
        .client
        .get(loc)
        .header("accept", ACCEPT_ALL_MANIFESTS)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_manifest(&app, &repo, &img.digest, OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn pushing_the_same_manifest_twice_is_idempotent() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let img = make_image(&app, &repo).await;
    put_manifest_ok(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
    put_manifest_ok(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
    put_manifest_ok(&app, &repo, &img.digest, OCI_MANIFEST, &img.manifest).await;
    assert_manifest(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn retagging_moves_the_tag_and_keeps_the_old_manifest() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let first = push_image(&app, &repo, "latest").await;
    let second = push_image(&app, &repo, "latest").await;
    assert_manifest(&app, &repo, "latest", OCI_MANIFEST, &second.manifest).await;
    assert_manifest(&app, &repo, &first.digest, OCI_MANIFEST, &first.manifest).await;
}

#[tokio::test]
async fn oci_index_put_and_get() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let amd = make_image(&app, &repo).await;
    let arm = make_image(&app, &repo).await;
    put_manifest_ok(&app, &repo, &amd.digest, OCI_MANIFEST, &amd.manifest).await;
    put_manifest_ok(&app, &repo, &arm.digest, OCI_MANIFEST, &arm.manifest).await;

    let mut d_amd = descriptor(OCI_MANIFEST, &amd.manifest);
    d_amd["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut d_arm = descriptor(OCI_MANIFEST, &arm.manifest);
    d_arm["platform"] = json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
    let index = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [d_amd, d_arm],
    }));
    let digest = put_manifest_ok(&app, &repo, "multi", OCI_INDEX, &index).await;
    assert_manifest(&app, &repo, "multi", OCI_INDEX, &index).await;
    assert_manifest(&app, &repo, &digest, OCI_INDEX, &index).await;
    // The children stay pullable.
    assert_manifest(&app, &repo, &amd.digest, OCI_MANIFEST, &amd.manifest).await;
}

#[tokio::test]
async fn docker_schema2_manifest_put_and_get() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let img = make_docker_image(&app, &repo).await;
    let digest = put_manifest_ok(&app, &repo, "v1", DOCKER_MANIFEST, &img.manifest).await;
    assert_manifest(&app, &repo, "v1", DOCKER_MANIFEST, &img.manifest).await;
    assert_manifest(&app, &repo, &digest, DOCKER_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn docker_manifest_list_put_and_get() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let amd = make_docker_image(&app, &repo).await;
    let arm = make_docker_image(&app, &repo).await;
    put_manifest_ok(&app, &repo, &amd.digest, DOCKER_MANIFEST, &amd.manifest).await;
    put_manifest_ok(&app, &repo, &arm.digest, DOCKER_MANIFEST, &arm.manifest).await;

    let mut d_amd = descriptor(DOCKER_MANIFEST, &amd.manifest);
    d_amd["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut d_arm = descriptor(DOCKER_MANIFEST, &arm.manifest);
    d_arm["platform"] = json!({"architecture": "arm64", "os": "linux"});
    let list = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [d_amd, d_arm],
    }));
    let digest = put_manifest_ok(&app, &repo, "multi", DOCKER_LIST, &list).await;
    assert_manifest(&app, &repo, "multi", DOCKER_LIST, &list).await;
    assert_manifest(&app, &repo, &digest, DOCKER_LIST, &list).await;
}

#[tokio::test]
async fn artifact_manifest_with_empty_config_put_and_get() {
    let app = TestApp::start().await;
    let repo = unique_repo("artifact");
    let (manifest, digest) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.sbom.v1",
        json!({"annotations": {"org.example.kind": "sbom"}}),
    )
    .await;
    let pushed = put_manifest_ok(&app, &repo, "sbom", OCI_MANIFEST, &manifest).await;
    assert_eq!(pushed, digest);
    assert_manifest(&app, &repo, "sbom", OCI_MANIFEST, &manifest).await;
    assert_blob(&app, &repo, EMPTY_JSON_DIGEST, b"{}").await;
}

#[tokio::test]
async fn manifest_with_a_sha512_layer_is_accepted() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux"})).unwrap();
    push_blob(&app, &repo, &config).await;
    let layer = random_bytes(800);
    let layer_digest = sha512_digest(&layer);
    push_blob_with_digest(&app, &repo, &layer, &layer_digest).await;
    let manifest = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
    }));
    put_manifest_ok(&app, &repo, "sha512", OCI_MANIFEST, &manifest).await;
    assert_manifest(&app, &repo, "sha512", OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn manifest_without_media_type_field_keeps_the_pushed_content_type() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux"})).unwrap();
    push_blob(&app, &repo, &config).await;
    let layer = random_bytes(100);
    push_blob(&app, &repo, &layer).await;
    let manifest = manifest_bytes(&json!({
        "schemaVersion": 2,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &layer)],
    }));
    put_manifest_ok(&app, &repo, "v1", OCI_MANIFEST, &manifest).await;
    assert_manifest(&app, &repo, "v1", OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn content_type_parameters_on_manifest_put_are_ignored() {
    // "Registries SHOULD ignore any parameters" on the Content-Type of a manifest PUT.
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let img = make_image(&app, &repo).await;
    let ctype = format!("{OCI_MANIFEST}; charset=utf-8");
    put_manifest_ok(&app, &repo, "v1", &ctype, &img.manifest).await;
    assert_manifest(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn manifest_referencing_a_missing_blob_is_400_manifest_blob_unknown() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux"})).unwrap();
    push_blob(&app, &repo, &config).await;
    let present = random_bytes(100);
    push_blob(&app, &repo, &present).await;
    let missing = random_bytes(100);

    // Missing layer.
    let manifest = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &present), descriptor(OCI_LAYER, &missing)],
    }));
    let resp = put_manifest(&app, &repo, "v1", OCI_MANIFEST, &manifest).await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;

    // Missing config.
    let manifest = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, b"{\"not\":\"pushed\"}"),
        "layers": [descriptor(OCI_LAYER, &present)],
    }));
    let resp = put_manifest(&app, &repo, "v1", OCI_MANIFEST, &manifest).await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;

    assert_oci_error(
        get_manifest(&app, &repo, "v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn manifest_referencing_a_blob_of_another_repository_is_400() {
    let app = TestApp::start().await;
    let a = unique_repo("manifest-a");
    let b = unique_repo("manifest-b");
    let img = make_image(&app, &a).await;
    let resp = put_manifest(&app, &b, "v1", OCI_MANIFEST, &img.manifest).await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn index_referencing_an_unknown_manifest_is_400_manifest_blob_unknown() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let known = make_image(&app, &repo).await;
    put_manifest_ok(&app, &repo, &known.digest, OCI_MANIFEST, &known.manifest).await;
    let unknown = make_image(&app, &repo).await; // blobs pushed, manifest not

    let index = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            descriptor(OCI_MANIFEST, &known.manifest),
            descriptor(OCI_MANIFEST, &unknown.manifest),
        ],
    }));
    let resp = put_manifest(&app, &repo, "multi", OCI_INDEX, &index).await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn invalid_manifest_json_is_400_manifest_invalid() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    push_blob(&app, &repo, b"make the repository exist").await;

    let bodies: [&[u8]; 4] = [
        b"{not json",
        b"",
        b"[1, 2, 3]",
        // JSON, but not an image manifest: no config, no layers.
        b"{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\"}",
    ];
    for body in bodies {
        eprintln!("PUT manifest {:?}:", String::from_utf8_lossy(body));
        let resp = put_manifest(&app, &repo, "bad", OCI_MANIFEST, body).await;
        assert_oci_error(resp, 400, "MANIFEST_INVALID").await;
    }
}

#[tokio::test]
async fn content_type_disagreeing_with_media_type_is_400_manifest_invalid() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let img = make_image(&app, &repo).await; // mediaType: OCI image manifest
    for wrong in [DOCKER_MANIFEST, OCI_INDEX] {
        let resp = put_manifest(&app, &repo, "v1", wrong, &img.manifest).await;
        assert_oci_error(resp, 400, "MANIFEST_INVALID").await;
    }
}

#[tokio::test]
async fn manifest_put_by_digest_with_other_content_is_400_digest_invalid() {
    let app = TestApp::start().await;
    let repo = unique_repo("manifest");
    let img = make_image(&app, &repo).await;
    let wrong = sha256_digest(b"not this manifest");
    let resp = put_manifest(&app, &repo, &wrong, OCI_MANIFEST, &img.manifest).await;
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    assert_eq!(get_manifest(&app, &repo, &wrong).await.status(), 404);
    assert_eq!(get_manifest(&app, &repo, &img.digest).await.status(), 404);
}

/// An image manifest padded with an annotation to exactly `size` bytes.
async fn manifest_of_size(app: &TestApp, repo: &str, size: usize) -> Vec<u8> {
    let img = make_image_with(
        app,
        repo,
        OCI_MANIFEST,
        OCI_CONFIG,
        OCI_LAYER,
        json!({"annotations": {"pad": ""}}),
    )
    .await;
    assert!(img.manifest.len() <= size, "base manifest too large");
    let pad = "x".repeat(size - img.manifest.len());
    let mut v: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    v["annotations"]["pad"] = json!(pad);
    let bytes = manifest_bytes(&v);
    assert_eq!(bytes.len(), size);
    bytes
}

#[tokio::test]
async fn manifest_over_the_size_limit_is_413_with_oci_error() {
    if skip_external(
        "manifest_over_the_size_limit_is_413_with_oci_error",
        "sets a config limit",
    ) {
        return;
    }
    let app = TestApp::builder()
        .env("BERTH_LIMITS__MANIFEST_MAX_BYTES", "1024")
        .start()
        .await;
    let repo = unique_repo("limit");

    let small = make_image(&app, &repo).await;
    assert!(small.manifest.len() < 1024);
    put_manifest_ok(&app, &repo, "small", OCI_MANIFEST, &small.manifest).await;

    let exact = manifest_of_size(&app, &repo, 1024).await;
    put_manifest_ok(&app, &repo, "exact", OCI_MANIFEST, &exact).await;

    let big = manifest_of_size(&app, &repo, 1025).await;
    let resp = put_manifest(&app, &repo, "big", OCI_MANIFEST, &big).await;
    assert_oci_error_in(resp, &[413], &["SIZE_INVALID", "MANIFEST_INVALID"]).await;
    let huge = manifest_of_size(&app, &repo, 200_000).await;
    let resp = put_manifest(&app, &repo, "huge", OCI_MANIFEST, &huge).await;
    assert_oci_error_in(resp, &[413], &["SIZE_INVALID", "MANIFEST_INVALID"]).await;
    assert_eq!(get_manifest(&app, &repo, "big").await.status(), 404);
}

#[tokio::test]
async fn a_4_mib_manifest_is_accepted_by_default() {
    // "Clients and registries SHOULD expect to support manifest uploads of at least 4 MiB."
    let app = TestApp::start().await;
    let repo = unique_repo("limit");
    let manifest = manifest_of_size(&app, &repo, 4 * 1024 * 1024).await;
    let digest = put_manifest_ok(&app, &repo, "big", OCI_MANIFEST, &manifest).await;
    assert_manifest(&app, &repo, &digest, OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn manifest_with_subject_answers_oci_subject() {
    let app = TestApp::start().await;
    let repo = unique_repo("subject");
    let img = push_image(&app, &repo, "v1").await;
    let (artifact, _) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.signature.v1",
        json!({"subject": subject(OCI_MANIFEST, &img.manifest)}),
    )
    .await;
    let resp = put_manifest(
        &app,
        &repo,
        &sha256_digest(&artifact),
        OCI_MANIFEST,
        &artifact,
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "oci-subject"),
        Some(img.digest.clone()),
        "OCI-Subject tells the client the registry processed the subject"
    );
}

#[tokio::test]
async fn manifest_whose_subject_does_not_exist_is_accepted() {
    // "A registry MUST accept a manifest that includes a subject field referencing
    // another manifest that does not yet exist in the repository."
    let app = TestApp::start().await;
    let repo = unique_repo("subject");
    let absent = make_image(&app, &repo).await; // manifest never pushed
    let (artifact, digest) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.signature.v1",
        json!({"subject": subject(OCI_MANIFEST, &absent.manifest)}),
    )
    .await;
    let resp = put_manifest(&app, &repo, &digest, OCI_MANIFEST, &artifact).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "oci-subject"), Some(absent.digest.clone()));
    assert_manifest(&app, &repo, &digest, OCI_MANIFEST, &artifact).await;
}
