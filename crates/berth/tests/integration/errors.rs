//! Bad input: malformed digests, invalid names and tags, path tricks, broken ranges and
//! unknown endpoints. None may answer 5xx; every 4xx under `/v2/` carries OCI error JSON.

use crate::common::TestApp;
use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Malformed digests: bad hex, unknown algorithm, upper-case hex (the OCI image spec
/// restricts sha256/sha512 to `[a-f0-9]`), wrong length, missing parts.
fn bad_digests() -> Vec<String> {
    vec![
        "sha256:xyz".to_string(),
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_string(),
        format!(
            "sha256:{}",
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        ),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        format!("sha512:{}", "a".repeat(64)),
        "sha256:".to_string(),
        ":abcdef".to_string(),
    ]
}

async fn send(app: &TestApp, method: Method, path: &str, body: &[u8]) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .header("content-type", "application/octet-stream")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// The name grammar of the spec plus the 255-character limit.
fn valid_name(name: &str) -> bool {
    fn component(c: &str) -> bool {
        // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
        let b = c.as_bytes();
        if b.is_empty() {
            return false;
        }
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        let mut i = 0;
        loop {
            let start = i;
            while i < b.len() && alnum(b[i]) {
                i += 1;
            }
            if i == start {
                return false;
            }
            if i == b.len() {
                return true;
            }
            let sep = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let s = &c[sep..i];
            let ok = s == "." || s == "_" || s == "__" || s.bytes().all(|x| x == b'-');
            if !ok || i == b.len() {
                return false;
            }
        }
    }
    name.len() <= 255 && name.split('/').all(component)
}

#[test]
fn name_grammar_helper_matches_the_spec() {
    for ok in ["a", "a/b", "a-b", "a--b", "a__b", "a.b/c_d", "0"] {
        assert!(valid_name(ok), "{ok}");
    }
    for bad in [
        "A", "a//b", "/a", "a/", "-a", "a-", "a..b", "a___b", "a/../b", "a.-b",
    ] {
        assert!(!valid_name(bad), "{bad}");
    }
}

#[tokio::test]
async fn malformed_digests_for_blobs_are_400_or_404_never_500() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    push_blob(&app, &repo, b"make the repository exist").await;
    for bad in bad_digests() {
        let path = format!("/v2/{repo}/blobs/{bad}");
        let resp = send(&app, Method::GET, &path, b"").await;
        check_bad_digest(resp).await;
        let resp = send(&app, Method::DELETE, &path, b"").await;
        check_bad_digest(resp).await;
        let resp = app.client.head(app.url(&path)).send().await.unwrap();
        assert!(
            [400, 404].contains(&resp.status().as_u16()),
            "HEAD {path}: {}",
            resp.status()
        );
    }
}

/// 400 DIGEST_INVALID, or 404 with OCI error JSON.
async fn check_bad_digest(resp: reqwest::Response) {
    if resp.status() == 400 {
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    } else {
        assert_oci_error_in(resp, &[404], &[]).await;
    }
}

#[tokio::test]
async fn malformed_digests_for_manifests_are_400_or_404_never_500() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    let img = push_image(&app, &repo, "v1").await;
    for bad in bad_digests() {
        let path = format!("/v2/{repo}/manifests/{bad}");
        let resp = send(&app, Method::GET, &path, b"").await;
        assert_oci_error_in(resp, &[400, 404], &[]).await;
        let resp = send(&app, Method::DELETE, &path, b"").await;
        assert_oci_error_in(resp, &[400, 404], &[]).await;
        let resp = put_manifest(&app, &repo, &bad, OCI_MANIFEST, &img.manifest).await;
        assert_oci_error_in(
            resp,
            &[400, 404],
            &[
                "DIGEST_INVALID",
                "MANIFEST_INVALID",
                "TAG_INVALID",
                "NAME_INVALID",
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_digest_on_upload_is_400_digest_invalid() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    for bad in bad_digests() {
        let u = with_query(
            url(&app, &format!("/v2/{repo}/blobs/uploads/")),
            "digest",
            &bad,
        );
        let resp = app
            .client
            .post(u)
            .body(b"data".to_vec())
            .send()
            .await
            .unwrap();
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;

        let upload = start_upload(&app, &repo).await;
        let resp = app
            .client
            .put(with_query(upload, "digest", &bad))
            .body(b"data".to_vec())
            .send()
            .await
            .unwrap();
        assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    }
}

#[tokio::test]
async fn malformed_digest_in_mount_is_refused_or_ignored() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    let src = unique_repo("errors-src");
    push_blob(&app, &src, b"source exists").await;
    for bad in bad_digests() {
        let u = with_query(
            with_query(
                url(&app, &format!("/v2/{repo}/blobs/uploads/")),
                "mount",
                &bad,
            ),
            "from",
            &src,
        );
        let resp = app.client.post(u).send().await.unwrap();
        if resp.status() == 202 {
            location(&resp); // fell back to an upload session
        } else {
            assert_oci_error(resp, 400, "DIGEST_INVALID").await;
        }
    }
}

#[tokio::test]
async fn manifest_with_a_malformed_descriptor_digest_is_400() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    let config = b"{}".to_vec();
    push_blob(&app, &repo, &config).await;
    let manifest = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [{"mediaType": OCI_LAYER, "digest": "sha256:xyz", "size": 3}],
    }));
    let resp = put_manifest(&app, &repo, "v1", OCI_MANIFEST, &manifest).await;
    assert_oci_error_in(resp, &[400], &["MANIFEST_INVALID", "DIGEST_INVALID"]).await;
}

#[tokio::test]
async fn invalid_repository_names_are_refused() {
    let app = TestApp::start().await;
    let u = unique();
    let names = [
        format!("Upper-{u}/repo"),
        format!("lower-{u}/Repo"),
        format!("{u}//double"),
        format!("-{u}/lead"),
        format!("{u}-/trail"),
        format!("{u}..dots/repo"),
        format!("{u}/a___b"),
        "a".repeat(256),
        format!("{u}/{}", "b".repeat(250)),
    ];
    for name in &names {
        for (method, path) in [
            (Method::POST, format!("/v2/{name}/blobs/uploads/")),
            (Method::GET, format!("/v2/{name}/tags/list")),
            (Method::GET, format!("/v2/{name}/manifests/latest")),
        ] {
            let resp = send(&app, method.clone(), &path, b"").await;
            if resp.status() == 400 {
                assert_oci_error(resp, 400, "NAME_INVALID").await;
            } else {
                assert_oci_error_in(resp, &[404], &[]).await;
            }
        }
        let img = make_image(&app, &unique_repo("errors-valid")).await;
        let resp = put_manifest(&app, name, "v1", OCI_MANIFEST, &img.manifest).await;
        if resp.status() == 400 {
            assert_oci_error(resp, 400, "NAME_INVALID").await;
        } else {
            assert_oci_error_in(resp, &[404], &[]).await;
        }
    }
    assert_catalog_names_valid(&app).await;
}

#[tokio::test]
async fn a_255_character_name_is_accepted() {
    let app = TestApp::start().await;
    let prefix = format!("long-{}/", unique());
    let name = format!("{prefix}{}", "n".repeat(255 - prefix.len()));
    assert_eq!(name.len(), 255);
    let data = random_bytes(10);
    let digest = push_blob(&app, &name, &data).await;
    assert_blob(&app, &name, &digest, &data).await;
}

/// Every repository in the catalog matches the name grammar: nothing invalid was
/// created by the requests before.
async fn assert_catalog_names_valid(app: &TestApp) {
    let resp = app
        .client
        .get(app.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    for name in v["repositories"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            valid_name(name),
            "the catalog lists an invalid name {name:?}"
        );
    }
}

#[tokio::test]
async fn path_traversal_in_names_is_refused() {
    let app = TestApp::start().await;
    let u = unique();
    let victim = format!("victim-{u}/repo");
    let data = random_bytes(100);
    let digest = push_blob(&app, &victim, &data).await;
    let paths = [
        format!("/v2/attacker-{u}/../victim-{u}/repo/blobs/{digest}"),
        format!("/v2/attacker-{u}/%2e%2e/victim-{u}/repo/blobs/{digest}"),
        format!("/v2/attacker-{u}/%2E%2E/victim-{u}/repo/blobs/{digest}"),
        format!("/v2/victim-{u}/repo/../repo/blobs/{digest}"),
        format!("/v2/../victim-{u}/repo/blobs/{digest}"),
        format!("/v2/./victim-{u}/repo/blobs/{digest}"),
        format!("/v2//victim-{u}/repo/blobs/{digest}"),
        format!("/v2/victim-{u}%2Frepo/blobs/{digest}"),
        format!("/v2/attacker-{u}/..%2F..%2F..%2Fetc/blobs/{digest}"),
    ];
    for path in &paths {
        for method in ["GET", "DELETE"] {
            let resp = raw_request(&app, method, path, b"").await;
            assert!(
                [400, 404].contains(&resp.status),
                "{method} {path}: expected 400 or 404, got {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
            let codes = oci_error_codes(&resp.body)
                .unwrap_or_else(|e| panic!("{method} {path} ({}): {e}", resp.status));
            if resp.status == 400 {
                assert!(
                    codes.iter().any(|c| c == "NAME_INVALID"),
                    "{method} {path}: 400 should say NAME_INVALID, got {codes:?}"
                );
            }
        }
        let resp = raw_request(
            &app,
            "POST",
            &path.replace(&format!("blobs/{digest}"), "blobs/uploads/"),
            b"",
        )
        .await;
        assert!(
            [400, 404].contains(&resp.status),
            "POST upload via {path}: expected 400 or 404, got {}",
            resp.status
        );
        oci_error_codes(&resp.body).unwrap_or_else(|e| panic!("POST upload via {path}: {e}"));
    }
    // Nothing was deleted through a trick path.
    assert_blob(&app, &victim, &digest, &data).await;
    assert_catalog_names_valid(&app).await;
}

#[tokio::test]
async fn tags_up_to_128_characters_are_accepted_longer_ones_refused() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    let img = make_image(&app, &repo).await;

    let ok = format!("t{}", "a".repeat(127));
    assert_eq!(ok.len(), 128);
    put_manifest_ok(&app, &repo, &ok, OCI_MANIFEST, &img.manifest).await;
    assert_manifest(&app, &repo, &ok, OCI_MANIFEST, &img.manifest).await;

    let long = format!("t{}", "a".repeat(128));
    let resp = put_manifest(&app, &repo, &long, OCI_MANIFEST, &img.manifest).await;
    assert_oci_error_in(
        resp,
        &[400, 404],
        &["TAG_INVALID", "MANIFEST_INVALID", "NAME_INVALID"],
    )
    .await;
    let resp = get_manifest(&app, &repo, &long).await;
    assert_oci_error_in(resp, &[400, 404], &[]).await;
}

#[tokio::test]
async fn tags_with_invalid_characters_are_refused() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    let img = make_image(&app, &repo).await;
    for bad in [
        "-lead",
        ".lead",
        "plus+sign",
        "semi;colon",
        "q%3Fmark",
        "a%20space",
    ] {
        let resp = put_manifest(&app, &repo, bad, OCI_MANIFEST, &img.manifest).await;
        assert_oci_error_in(
            resp,
            &[400, 404],
            &["TAG_INVALID", "MANIFEST_INVALID", "NAME_INVALID"],
        )
        .await;
    }
    // None of them became a tag.
    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    if resp.status() == 200 {
        let v: Value = resp.json().await.unwrap();
        let tags = v["tags"].as_array().cloned().unwrap_or_default();
        assert!(tags.is_empty(), "invalid tags were stored: {tags:?}");
    } else {
        assert_oci_error(resp, 404, "NAME_UNKNOWN").await;
    }
}

#[tokio::test]
async fn unknown_paths_under_v2_are_404_with_oci_error_json() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    push_image(&app, &repo, "v1").await;
    for path in [
        format!("/v2/{repo}/unknown/thing"),
        format!("/v2/{repo}"),
        format!("/v2/{repo}/"),
        format!("/v2/{repo}/tags"),
        format!("/v2/{repo}/tags/list/extra"),
        "/v2/_catalogue".to_string(),
        "/v2/nothing/at/all/here".to_string(),
    ] {
        let resp = send(&app, Method::GET, &path, b"").await;
        assert_oci_error_in(resp, &[404], &[]).await;
    }
    // An empty digest or reference: a malformed request (400) or nothing there (404).
    for path in [
        format!("/v2/{repo}/blobs/"),
        format!("/v2/{repo}/manifests/"),
    ] {
        let resp = send(&app, Method::GET, &path, b"").await;
        assert_oci_error_in(resp, &[400, 404], &[]).await;
    }
}

#[tokio::test]
async fn wrong_methods_under_v2_are_4xx_with_oci_error_json() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    push_image(&app, &repo, "v1").await;
    for (method, path) in [
        (Method::DELETE, "/v2/_catalog".to_string()),
        (Method::POST, format!("/v2/{repo}/tags/list")),
        (Method::POST, format!("/v2/{repo}/manifests/v1")),
        (Method::PATCH, format!("/v2/{repo}/manifests/v1")),
    ] {
        let resp = send(&app, method.clone(), &path, b"").await;
        assert_oci_error_in(resp, &[404, 405], &[]).await;
    }
}

#[tokio::test]
async fn broken_content_ranges_are_refused() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    let data = random_bytes(100);
    for range in ["0-99x", "99-0", "0-", "-", "abc", "0-199"] {
        // A fresh session each time: 0-199 claims more bytes than the body holds.
        let upload = start_upload(&app, &repo).await;
        let resp = app
            .client
            .patch(upload.clone())
            .header("content-type", "application/octet-stream")
            .header("content-range", range)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        eprintln!("PATCH with Content-Range {range:?} and 100 bytes:");
        assert_oci_error_in(resp, &[400, 416], &[]).await;
        // The session stays usable and nothing was stored: the first chunk still fits.
        let resp = app.client.get(upload.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 204, "session after Content-Range {range:?}");
        let resp = app
            .client
            .patch(upload)
            .header("content-type", "application/octet-stream")
            .header("content-range", "0-99")
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            202,
            "first chunk after Content-Range {range:?}"
        );
        assert_eq!(header(&resp, "range").as_deref(), Some("0-99"));
    }
}

#[tokio::test]
async fn closing_an_upload_without_digest_is_400() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    let upload = start_upload(&app, &repo).await;
    let resp = app
        .client
        .put(upload)
        .body(b"data".to_vec())
        .send()
        .await
        .unwrap();
    assert_oci_error_in(resp, &[400], &["DIGEST_INVALID", "BLOB_UPLOAD_INVALID"]).await;
}

#[tokio::test]
async fn every_4xx_under_v2_carries_oci_error_json() {
    let app = TestApp::start().await;
    let repo = unique_repo("errors");
    let img = push_image(&app, &repo, "v1").await;
    let missing = sha256_digest(b"missing");
    let upload = start_upload(&app, &repo).await;
    let upload_path = upload.path().to_string();
    let cases: Vec<(Method, String, Vec<u8>)> = vec![
        (Method::GET, format!("/v2/{repo}/blobs/{missing}"), vec![]),
        (
            Method::DELETE,
            format!("/v2/{repo}/blobs/{missing}"),
            vec![],
        ),
        (Method::GET, format!("/v2/{repo}/manifests/nope"), vec![]),
        (
            Method::GET,
            format!("/v2/{repo}/manifests/{missing}"),
            vec![],
        ),
        (Method::DELETE, format!("/v2/{repo}/manifests/nope"), vec![]),
        (
            Method::PUT,
            format!("/v2/{repo}/manifests/x"),
            b"{".to_vec(),
        ),
        (
            Method::PUT,
            format!("/v2/{repo}/manifests/{missing}"),
            img.manifest.clone(),
        ),
        (
            Method::GET,
            format!("/v2/{}/tags/list", unique_repo("none")),
            vec![],
        ),
        (Method::GET, format!("/v2/{repo}/tags/list?n=-1"), vec![]),
        (Method::GET, format!("/v2/{repo}/tags/list?n=abc"), vec![]),
        (Method::GET, "/v2/_catalog?n=-1".to_string(), vec![]),
        (
            Method::GET,
            format!("/v2/{repo}/blobs/uploads/{}", uuid::Uuid::new_v4()),
            vec![],
        ),
        (
            Method::GET,
            format!("/v2/{repo}/blobs/uploads/not-a-session"),
            vec![],
        ),
        (
            Method::PUT,
            format!("{upload_path}?digest=sha256:xyz"),
            b"x".to_vec(),
        ),
        (
            Method::GET,
            format!("/v2/{repo}/referrers/sha256:xyz"),
            vec![],
        ),
        (Method::GET, "/v2/UPPER/tags/list".to_string(), vec![]),
    ];
    for (method, path, body) in cases {
        let resp = app
            .client
            .request(method.clone(), app.url(&path))
            .header("content-type", OCI_MANIFEST)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(status < 500, "{method} {path}: {status}");
        let bytes = resp.bytes().await.unwrap();
        if (400..500).contains(&status) {
            oci_error_codes(&bytes).unwrap_or_else(|e| panic!("{method} {path} ({status}): {e}"));
        }
    }
}

/// A client that trickles its headers (slow loris) is disconnected once
/// `server.header_timeout` has passed; other clients are served meanwhile.
#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if skip_external("slow loris", "sets Berth's server.header_timeout") {
        return;
    }
    let app = TestApp::builder()
        .env("BERTH_SERVER__HEADER_TIMEOUT", "1s")
        .start()
        .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // Keep trickling a header byte every 200 ms: never finishing the request.
    let mut closed = false;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if slow.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(std::time::Duration::from_millis(1), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                // An answer (408) before closing is fine too.
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                closed = true;
                break;
            }
            Err(_) => {}
        }
        // Meanwhile, another client is served.
        assert_eq!(
            app.client
                .get(app.url("/v2/"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert!(closed, "the slow client was never disconnected");
    let after = started.elapsed();
    assert!(
        after < std::time::Duration::from_secs(4),
        "disconnected after {after:?}, with a 1 s header timeout"
    );
}

/// An upload whose body stalls is abandoned after `limits.body_idle_timeout`: the
/// client gets BLOB_UPLOAD_INVALID, the chunk is rolled back, the session can resume.
#[tokio::test]
async fn a_stalled_upload_body_is_abandoned_and_rolled_back() {
    if skip_external("stalled body", "sets Berth's limits.body_idle_timeout") {
        return;
    }
    let app = TestApp::builder()
        .env("BERTH_LIMITS__BODY_IDLE_TIMEOUT", "1s")
        .start()
        .await;
    let upload = start_upload(&app, "stall/app").await;
    let first: Result<Vec<u8>, std::io::Error> = Ok(vec![7u8; 1000]);
    let body = futures_util::StreamExt::chain(
        futures_util::stream::iter([first]),
        futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            Ok(vec![8u8; 10])
        }),
    );
    let started = std::time::Instant::now();
    let resp = app
        .client
        .patch(upload.clone())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    assert_oci_error(resp, 400, "BLOB_UPLOAD_INVALID").await;
    let status = app.client.get(upload.clone()).send().await.unwrap();
    assert_eq!(status.status(), 204, "the session is still there");
    assert_eq!(
        header(&status, "range").as_deref(),
        Some("0-0"),
        "and empty"
    );
}

/// One account (here: one client address, authentication off) may hold at most
/// `limits.uploads_per_user` open sessions; finishing or cancelling one frees a place.
#[tokio::test]
async fn open_upload_sessions_are_limited_per_user() {
    if skip_external("upload limit", "sets Berth's limits.uploads_per_user") {
        return;
    }
    let app = TestApp::builder()
        .env("BERTH_LIMITS__UPLOADS_PER_USER", "3")
        .start()
        .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(start_upload(&app, "limit/app").await);
    }
    let post = || {
        app.client
            .post(app.url("/v2/limit/app/blobs/uploads/"))
            .send()
    };
    assert_oci_error(post().await.unwrap(), 429, "TOOMANYREQUESTS").await;
    let resp = app.client.delete(open.pop().unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(post().await.unwrap().status(), 202);
    // A monolithic push opens no session: never limited.
    let resp = app
        .client
        .post(app.url(&format!(
            "/v2/limit/app/blobs/uploads/?digest={}",
            sha256_digest(b"x")
        )))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

/// Writes `head` and `body` on a fresh connection, half-closes it, and returns what
/// the server answered (empty if it just closed).
async fn raw_exchange(app: &TestApp, head: String, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(body).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// A chunk shorter than its Content-Length (the client gives up half-way): nothing of it
/// is kept, and the session continues from where it was.
#[tokio::test]
async fn a_body_shorter_than_announced_leaves_the_upload_as_it_was() {
    let app = TestApp::start().await;
    let upload = start_upload(&app, "short/app").await;
    let path =
        upload.path().to_string() + &upload.query().map(|q| format!("?{q}")).unwrap_or_default();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: registry\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: 0-99999\r\nContent-Length: 100000\r\n\r\n"
    );
    raw_exchange(&app, head, &random_bytes(50_000)).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let status = app.client.get(upload.clone()).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(
        header(&status, "range").as_deref(),
        Some("0-0"),
        "the half chunk is not kept"
    );
    // The client tries again, whole: the blob is complete.
    let data = random_bytes(100_000);
    let resp = app
        .client
        .patch(upload.clone())
        .header("content-range", "0-99999")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let d = sha256_digest(&data);
    let resp = app
        .client
        .put(with_query(location(&resp), "digest", &d))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_blob(&app, "short/app", &d, &data).await;
}

/// A body longer than its Content-Length: the blob is exactly the announced bytes (and
/// so fails its digest if the client meant all of them); the rest is not a request.
#[tokio::test]
async fn a_body_longer_than_announced_is_cut_at_the_announced_length() {
    let app = TestApp::start().await;
    let data = random_bytes(1000);
    let d = sha256_digest(&data[..600]);
    let head = format!(
        "POST /v2/long/app/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: registry\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 600\r\n\r\n"
    );
    let answer = raw_exchange(&app, head, &data).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // The 400 extra bytes were read as a (malformed) next request, not stored.
    assert_blob(&app, "long/app", &d, &data[..600]).await;
}

/// Manifests nested deeper than the limit are refused before anything is stored.
#[tokio::test]
async fn a_manifest_nested_too_deep_is_400_manifest_invalid() {
    let app = TestApp::start().await;
    let img = make_image(&app, "deep/app").await;
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    let mut nested = serde_json::json!("bottom");
    for _ in 0..200 {
        nested = serde_json::json!([nested]);
    }
    m["annotations"] = serde_json::json!({ "x": "y" });
    m["extra"] = nested;
    let bytes = serde_json::to_vec(&m).unwrap();
    let resp = put_manifest(&app, "deep/app", "v1", OCI_MANIFEST, &bytes).await;
    assert_oci_error(resp, 400, "MANIFEST_INVALID").await;
    let resp = app
        .client
        .get(app.url("/v2/deep/app/tags/list"))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["tags"].as_array().is_none_or(|t| t.is_empty()),
        "nothing was tagged: {v}"
    );
}
