//! Small building blocks shared by the conformance tests: digests, content, pushing
//! blobs and manifests, following `Location` headers and checking OCI error bodies.
//!
//! Every helper asserts what the OCI Distribution Spec v1.1 requires of the steps it
//! takes (e.g. `push_blob` insists on `202` + `Location` for the POST and `201` for the
//! PUT), so a test that uses it fails at the first non-conforming answer.

use crate::common::TestApp;
use reqwest::{Response, Url};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha512};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Digest of the two bytes `{}`, the OCI "empty" descriptor.
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest media type the suite pushes, for `Accept` on manifest GET/HEAD.
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha512_digest(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// A fresh suffix, so tests can share one registry (`BERTH_TEST_EXTERNAL_URL`).
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A repository name no other test uses: `PREFIX-XXXXXXXXXXXX/repo`.
pub fn unique_repo(prefix: &str) -> String {
    format!("{prefix}-{}/repo", unique())
}

/// `len` pseudo-random bytes (xorshift seeded from a v4 UUID): every call differs, so
/// blobs pushed by different tests never share a digest.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let seed = uuid::Uuid::new_v4().as_u128();
    let mut state = (seed as u64) ^ ((seed >> 64) as u64) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// True (and a loud message on stderr) when the suite runs against an external
/// registry, where a test that restarts or reconfigures the server cannot run.
pub fn skip_external(test: &str, why: &str) -> bool {
    if std::env::var_os("BERTH_TEST_EXTERNAL_URL").is_some() {
        eprintln!("\n!!!!!!!! SKIPPED {test}: {why} (BERTH_TEST_EXTERNAL_URL is set) !!!!!!!!\n");
        return true;
    }
    false
}

// ---------------------------------------------------------------------------------
// Headers, locations, queries

pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("header is not ASCII").to_string())
}

/// The `Location` header of `resp`, resolved against the request URL (it may be absolute
/// or relative, RFC 7231 §7.1.2). Panics when absent.
pub fn location(resp: &Response) -> Url {
    let raw = header(resp, "location").unwrap_or_else(|| {
        panic!(
            "{} {}: response has no Location header",
            resp.status(),
            resp.url()
        )
    });
    resp.url()
        .join(&raw)
        .unwrap_or_else(|e| panic!("Location {raw:?} does not resolve: {e}"))
}

/// Adds a query parameter, keeping the ones the registry put into an upload URL
/// (the spec allows critical query parameters in `<location>`).
pub fn with_query(mut url: Url, key: &str, value: &str) -> Url {
    url.query_pairs_mut().append_pair(key, value);
    url
}

pub fn url(app: &TestApp, path: &str) -> Url {
    Url::parse(&app.url(path)).unwrap()
}

/// Parses `Range: 0-N` (upload status) into N.
pub fn upload_range_end(resp: &Response) -> u64 {
    let range = header(resp, "range").unwrap_or_else(|| {
        panic!(
            "{} {}: response has no Range header",
            resp.status(),
            resp.url()
        )
    });
    let end = range
        .strip_prefix("0-")
        .unwrap_or_else(|| panic!("Range {range:?} does not start with 0-"));
    end.parse()
        .unwrap_or_else(|_| panic!("Range {range:?} is not 0-<integer>"))
}

// ---------------------------------------------------------------------------------
// OCI error bodies

/// The error codes of the spec ("The `code` field MUST be one of the following"), plus
/// the legacy Docker codes it says clients may encounter.
pub const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
    "TAG_INVALID",
    "MANIFEST_UNVERIFIED",
];

/// Checks `body` is `{"errors":[{"code":"UPPER_CASE","message":"..."},...]}` with codes
/// from the spec's list, and returns the codes.
pub fn oci_error_codes(body: &[u8]) -> Result<Vec<String>, String> {
    let text = String::from_utf8_lossy(body);
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e}): {text}"))?;
    let errors = v
        .get("errors")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no \"errors\" array: {text}"))?;
    if errors.is_empty() {
        return Err(format!("empty \"errors\" array: {text}"));
    }
    let mut codes = Vec::new();
    for e in errors {
        let code = e
            .get("code")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("error without a string \"code\": {text}"))?;
        if !SPEC_ERROR_CODES.contains(&code) {
            return Err(format!(
                "code {code:?} is not one of the spec's error codes {SPEC_ERROR_CODES:?}: {text}"
            ));
        }
        match e.get("message") {
            Some(Value::String(_)) => {}
            _ => return Err(format!("error without a string \"message\": {text}")),
        }
        codes.push(code.to_string());
    }
    Ok(codes)
}

/// Asserts `resp` has status `status` and an OCI error body that contains `code`;
/// returns the parsed body.
pub async fn assert_oci_error(resp: Response, status: u16, code: &str) -> Value {
    assert_oci_error_in(resp, &[status], &[code]).await
}

/// Like `assert_oci_error`, accepting any of `statuses` and any of `codes` (an empty
/// `codes` accepts every code, but the body must still be OCI error JSON).
pub async fn assert_oci_error_in(resp: Response, statuses: &[u16], codes: &[&str]) -> Value {
    let status = resp.status().as_u16();
    let what = format!("{}", resp.url());
    let ctype = header(&resp, "content-type").unwrap_or_default();
    let body = resp.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(
        statuses.contains(&status),
        "{what}: expected status {statuses:?}, got {status}; body: {text}"
    );
    let found = oci_error_codes(&body)
        .unwrap_or_else(|e| panic!("{what} ({status}): body is not OCI error JSON: {e}"));
    assert!(
        codes.is_empty() || found.iter().any(|c| codes.contains(&c.as_str())),
        "{what} ({status}): expected an error code in {codes:?}, got {found:?}; body: {text}"
    );
    assert!(
        ctype.starts_with("application/json"),
        "{what} ({status}): OCI error body has Content-Type {ctype:?}, expected application/json"
    );
    serde_json::from_slice(&body).unwrap()
}

// ---------------------------------------------------------------------------------
// Blobs

/// `POST /v2/<repo>/blobs/uploads/`: asserts 202 and returns the resolved upload URL.
pub async fn start_upload(app: &TestApp, repo: &str) -> Url {
    let resp = app
        .client
        .post(app.url(&format!("/v2/{repo}/blobs/uploads/")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "POST upload for {repo}");
    location(&resp)
}

/// Pushes `data` with POST then PUT (the upload every registry must support); returns
/// its sha256 digest.
pub async fn push_blob(app: &TestApp, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    push_blob_with_digest(app, repo, data, &digest).await;
    digest
}

pub async fn push_blob_with_digest(app: &TestApp, repo: &str, data: &[u8], digest: &str) {
    let upload = start_upload(app, repo).await;
    let resp = app
        .client
        .put(with_query(upload, "digest", digest))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 201, "PUT blob {digest} to {repo}: {body}");
}

pub async fn get_blob(app: &TestApp, repo: &str, digest: &str) -> Response {
    app.client
        .get(app.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap()
}

pub async fn head_blob(app: &TestApp, repo: &str, digest: &str) -> Response {
    app.client
        .head(app.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap()
}

/// Asserts the blob is in `repo` with exactly `data` as content.
pub async fn assert_blob(app: &TestApp, repo: &str, digest: &str, data: &[u8]) {
    let resp = get_blob(app, repo, digest).await;
    assert_eq!(resp.status(), 200, "GET blob {digest} in {repo}");
    let body = resp.bytes().await.unwrap();
    assert!(
        body[..] == data[..],
        "GET blob {digest} in {repo}: {} bytes differ from the {} pushed",
        body.len(),
        data.len()
    );
}

// ---------------------------------------------------------------------------------
// Manifests

pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": sha256_digest(data),
        "size": data.len(),
    })
}

pub async fn put_manifest(
    app: &TestApp,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    app.client
        .put(app.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// PUTs a manifest, asserts 201 with `Location` and the right `Docker-Content-Digest`,
/// returns the digest.
pub async fn put_manifest_ok(
    app: &TestApp,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let digest = sha256_digest(body);
    let resp = put_manifest(app, repo, reference, media_type, body).await;
    let status = resp.status();
    let loc = header(&resp, "location");
    let dcd = header(&resp, "docker-content-digest");
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 201, "PUT manifest {repo}:{reference}: {text}");
    assert!(
        loc.is_some(),
        "PUT manifest {repo}:{reference}: no Location"
    );
    assert_eq!(
        dcd.as_deref(),
        Some(digest.as_str()),
        "PUT manifest {repo}:{reference}: Docker-Content-Digest"
    );
    digest
}

pub async fn get_manifest(app: &TestApp, repo: &str, reference: &str) -> Response {
    app.client
        .get(app.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", ACCEPT_ALL_MANIFESTS)
        .send()
        .await
        .unwrap()
}

pub async fn head_manifest(app: &TestApp, repo: &str, reference: &str) -> Response {
    app.client
        .head(app.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", ACCEPT_ALL_MANIFESTS)
        .send()
        .await
        .unwrap()
}

/// Asserts `GET manifests/<reference>` answers 200 with exactly `body`, its digest and
/// `media_type`.
pub async fn assert_manifest(
    app: &TestApp,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) {
    let resp = get_manifest(app, repo, reference).await;
    assert_eq!(resp.status(), 200, "GET manifest {repo}:{reference}");
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some(media_type),
        "GET manifest {repo}:{reference}: Content-Type"
    );
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(sha256_digest(body)),
        "GET manifest {repo}:{reference}: Docker-Content-Digest"
    );
    let got = resp.bytes().await.unwrap();
    assert!(
        got[..] == body[..],
        "GET manifest {repo}:{reference}: body differs from the bytes pushed:\n{}\nvs\n{}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(body)
    );
}

/// An image whose blobs are pushed and whose manifest is not (yet).
pub struct Image {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub media_type: &'static str,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<(Vec<u8>, String)>,
}

fn to_manifest_bytes(v: &Value) -> Vec<u8> {
    // Pretty-printed with a trailing newline: the registry must keep the bytes as they
    // are, not re-serialise the JSON.
    let mut bytes = serde_json::to_vec_pretty(v).unwrap();
    bytes.push(b'\n');
    bytes
}

pub fn manifest_bytes(v: &Value) -> Vec<u8> {
    to_manifest_bytes(v)
}

/// Pushes a config and two layers to `repo`; returns the OCI image manifest for them
/// (not pushed).
pub async fn make_image(app: &TestApp, repo: &str) -> Image {
    make_image_with(app, repo, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER, json!({})).await
}

/// Like `make_image`, for a Docker schema 2 manifest.
pub async fn make_docker_image(app: &TestApp, repo: &str) -> Image {
    make_image_with(
        app,
        repo,
        DOCKER_MANIFEST,
        DOCKER_CONFIG,
        DOCKER_LAYER,
        json!({}),
    )
    .await
}

/// Like `make_image`, merging the fields of `extra` (an object) into the manifest.
pub async fn make_image_with(
    app: &TestApp,
    repo: &str,
    media_type: &'static str,
    config_type: &str,
    layer_type: &str,
    extra: Value,
) -> Image {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Labels": {"nonce": unique()}},
    }))
    .unwrap();
    let config_digest = push_blob(app, repo, &config).await;
    let mut layers = Vec::new();
    for size in [1500usize, 3000] {
        let data = random_bytes(size);
        let d = push_blob(app, repo, &data).await;
        layers.push((data, d));
    }
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_type, &config),
        "layers": layers.iter().map(|(d, _)| descriptor(layer_type, d)).collect::<Vec<_>>(),
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    let manifest = to_manifest_bytes(&m);
    Image {
        digest: sha256_digest(&manifest),
        manifest,
        media_type,
        config,
        config_digest,
        layers,
    }
}

/// `make_image` and PUT its manifest under `tag`.
pub async fn push_image(app: &TestApp, repo: &str, tag: &str) -> Image {
    let img = make_image(app, repo).await;
    put_manifest_ok(app, repo, tag, img.media_type, &img.manifest).await;
    img
}

/// Pushes the `{}` blob and returns an artifact manifest (empty config, one layer of
/// `layer_type`, `artifactType` set) merged with `extra`; the manifest is not pushed.
pub async fn make_artifact(
    app: &TestApp,
    repo: &str,
    artifact_type: &str,
    extra: Value,
) -> (Vec<u8>, String) {
    let empty_digest = push_blob(app, repo, b"{}").await;
    assert_eq!(empty_digest, EMPTY_JSON_DIGEST);
    let payload = random_bytes(300);
    push_blob(app, repo, &payload).await;
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2},
        "layers": [descriptor("application/vnd.example.payload", &payload)],
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    let bytes = to_manifest_bytes(&m);
    let digest = sha256_digest(&bytes);
    (bytes, digest)
}

/// A `subject` descriptor pointing at a manifest.
pub fn subject(media_type: &str, manifest: &[u8]) -> Value {
    descriptor(media_type, manifest)
}

// ---------------------------------------------------------------------------------
// Raw HTTP, for paths an URL library would normalise (`..`, `%2e%2e`, `//`)

pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `METHOD path` exactly as given over HTTP/1.1 and reads the whole answer.
pub async fn raw_request(app: &TestApp, method: &str, path: &str, body: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = Url::parse(&app.base).unwrap();
    let host = base.host_str().unwrap().to_string();
    let port = base.port_or_known_default().unwrap();
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut buf),
    )
    .await
    .expect("raw request timed out")
    .unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers in raw response");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked && method != "HEAD" {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..eol]).to_string();
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_str:?}"));
        data = &data[eol + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
    out
}
