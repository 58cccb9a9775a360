//! The registry under test and the OCI Distribution calls the workloads make.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::client::{self, location_path, with_query, Body, Conn};
use crate::data::Pattern;

pub const OCTET: (&str, &str) = ("content-type", "application/octet-stream");

/// The `Accept` a pull sends (what containerd and skopeo list).
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

pub struct Target {
    pub name: String,
    pub url: String,
    pub addr: SocketAddr,
    host: String,
    /// Whether `POST /blobs/uploads/?digest=` with a body stores the blob in one request
    /// (Berth) or only opens a session (distribution 2.8 ignores the digest).
    pub single_post: bool,
    /// The server's process, for RSS and CPU readings.
    pub pid: Option<u32>,
    /// The server's data directory, to drop the large blobs of a finished round.
    pub data_dir: Option<PathBuf>,
    /// `user:password` for the registry's token service: every request then carries a
    /// bearer token (see [`Target::authorize`]).
    pub creds: Option<String>,
    /// The current `Authorization` value.
    auth: Option<String>,
    /// Only these workloads run on this target (empty: all).
    pub only: Vec<String>,
    /// The shell command that collects this registry's garbage (the `gc` workload).
    pub gc_cmd: Option<String>,
}

impl Target {
    /// `spec` is `NAME=http://host:port` or just the URL.
    pub async fn new(spec: &str) -> Result<Self> {
        let (name, url) = match spec.split_once('=') {
            Some((n, u)) => (n.to_string(), u.to_string()),
            None => ("registry".to_string(), spec.to_string()),
        };
        let host = url
            .strip_prefix("http://")
            .with_context(|| format!("{url}: only http:// URLs are supported"))?
            .trim_end_matches('/')
            .to_string();
        let addr = tokio::net::lookup_host(&host)
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        Ok(Target {
            name,
            url,
            addr,
            host,
            single_post: false,
            pid: None,
            data_dir: None,
            creds: None,
            auth: None,
            only: Vec::new(),
            gc_cmd: None,
        })
    }

    pub fn conn(&self) -> Conn {
        Conn::new(self.addr, self.host.clone()).with_auth(self.auth.clone())
    }

    /// Gets a bearer token for `repo` (pull, push) through the Docker token flow: the
    /// realm named by the `401` of `GET /v2/`, with HTTP Basic credentials. No-op for a
    /// target without credentials.
    pub async fn authorize(&mut self, repo: &str) -> Result<()> {
        let Some(creds) = self.creds.clone() else {
            return Ok(());
        };
        let mut c = Conn::new(self.addr, self.host.clone());
        let (status, h, _) = c.fetch(Method::GET, "/v2/", &[], client::empty()).await?;
        if status != StatusCode::UNAUTHORIZED {
            bail!(
                "{}: GET /v2/ without credentials answered {status}, not 401",
                self.name
            );
        }
        let challenge = h
            .get("www-authenticate")
            .context("401 without WWW-Authenticate")?
            .to_str()?
            .to_string();
        let param = |key: &str| -> Option<String> {
            let start = challenge.find(&format!("{key}=\""))? + key.len() + 2;
            let len = challenge[start..].find('"')?;
            Some(challenge[start..start + len].to_string())
        };
        let realm = param("realm").context("challenge without realm")?;
        let service = param("service").unwrap_or_default();
        let path = format!(
            "{}?service={service}&scope=repository:{repo}:pull,push",
            client::origin_form(&realm)
        );
        let basic = format!("Basic {}", client::base64(creds.as_bytes()));
        let (status, _, body) = c
            .fetch(
                Method::GET,
                &path,
                &[("authorization", &basic)],
                client::empty(),
            )
            .await?;
        if status != StatusCode::OK {
            bail!("{}: token request answered {status}", self.name);
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .context("token response without a token")?;
        self.auth = Some(format!("Bearer {token}"));
        Ok(())
    }

    /// Checks that the registry answers and whether it takes single-request pushes.
    pub async fn probe(&mut self) -> Result<()> {
        self.authorize("bench/probe").await?;
        let mut c = self.conn();
        c.warm()
            .await
            .with_context(|| format!("{} at {} does not answer", self.name, self.url))?;
        let body = Bytes::from_static(b"berth-bench probe");
        let digest = crate::data::sha256_digest(&body);
        let path = format!("/v2/bench/probe/blobs/uploads/?digest={digest}");
        let (status, headers, _) = c
            .fetch(Method::POST, &path, &[OCTET], client::full(body))
            .await?;
        self.single_post = status == StatusCode::CREATED;
        if status == StatusCode::ACCEPTED {
            // Only a session was opened: close it.
            let loc = location_path(&headers)?;
            let _ = c.fetch(Method::DELETE, &loc, &[], client::empty()).await;
        }
        Ok(())
    }

    /// Where a blob's bytes live in the data directory (Berth's and distribution's
    /// filesystem layouts), if known.
    pub fn blob_files(&self, digest: &str) -> Vec<PathBuf> {
        let Some(dir) = &self.data_dir else {
            return Vec::new();
        };
        let hex = digest.trim_start_matches("sha256:");
        if hex.len() < 2 {
            return Vec::new();
        }
        vec![
            dir.join("blobstore/blobs/sha256").join(&hex[..2]).join(hex),
            dir.join("storage/docker/registry/v2/blobs/sha256")
                .join(&hex[..2])
                .join(hex)
                .join("data"),
        ]
    }

    /// Deletes a blob's bytes from the data directory, as garbage collection would
    /// (neither registry frees space on `DELETE`): keeps a long run's disk use flat.
    pub fn reclaim(&self, digest: &str) {
        for f in self.blob_files(digest) {
            let _ = std::fs::remove_file(f);
        }
    }
}

async fn expect(
    c: &mut Conn,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
    want: StatusCode,
) -> Result<hyper::HeaderMap> {
    let (status, h, bytes) = c.fetch(method.clone(), path, headers, body).await?;
    if status != want {
        bail!(
            "{method} {path}: {status} (wanted {want}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
    }
    Ok(h)
}

/// `POST /v2/<repo>/blobs/uploads/`: the session's path.
pub async fn start_upload(c: &mut Conn, repo: &str) -> Result<String> {
    let h = expect(
        c,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        client::empty(),
        StatusCode::ACCEPTED,
    )
    .await?;
    location_path(&h)
}

/// The push docker, containerd and skopeo make for a blob they have whole: POST, then
/// PUT `?digest=` with the bytes.
pub async fn push_post_put(
    c: &mut Conn,
    repo: &str,
    digest: &str,
    body: Body,
    len: u64,
) -> Result<()> {
    let loc = start_upload(c, repo).await?;
    let len = len.to_string();
    expect(
        c,
        Method::PUT,
        &with_query(&loc, "digest", digest),
        &[OCTET, ("content-length", &len)],
        body,
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

/// A monolithic push in the fewest requests the registry allows: one
/// `POST ?digest=` with the bytes where supported, else POST then PUT.
pub async fn push_monolithic(
    c: &mut Conn,
    t: &Target,
    repo: &str,
    digest: &str,
    body: Body,
    len: u64,
) -> Result<()> {
    if !t.single_post {
        return push_post_put(c, repo, digest, body, len).await;
    }
    push_single_post(c, repo, digest, body, len).await
}

/// One `POST /blobs/uploads/?digest=` with the bytes (registries that support it).
pub async fn push_single_post(
    c: &mut Conn,
    repo: &str,
    digest: &str,
    body: Body,
    len: u64,
) -> Result<()> {
    let n = len.to_string();
    expect(
        c,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[OCTET, ("content-length", &n)],
        body,
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

/// POST, `PATCH` chunks of `chunk` bytes with `Content-Range`, then PUT `?digest=`.
/// Returns the number of requests.
pub async fn push_chunked(
    c: &mut Conn,
    repo: &str,
    digest: &str,
    blob: &Pattern,
    chunk: u64,
) -> Result<u64> {
    let mut loc = start_upload(c, repo).await?;
    let mut requests = 2;
    let mut off = 0;
    while off < blob.len {
        let n = chunk.min(blob.len - off);
        let range = format!("{}-{}", off, off + n - 1);
        let len = n.to_string();
        let h = expect(
            c,
            Method::PATCH,
            &loc,
            &[OCTET, ("content-range", &range), ("content-length", &len)],
            blob.body(off, n),
            StatusCode::ACCEPTED,
        )
        .await?;
        loc = location_path(&h)?;
        off += n;
        requests += 1;
    }
    expect(
        c,
        Method::PUT,
        &with_query(&loc, "digest", digest),
        &[("content-length", "0")],
        client::empty(),
        StatusCode::CREATED,
    )
    .await?;
    Ok(requests)
}

/// Cross-repository mount (`201` when the registry had the blob in `from`).
pub async fn mount(c: &mut Conn, repo: &str, from: &str, digest: &str) -> Result<()> {
    expect(
        c,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
        &[("content-length", "0")],
        client::empty(),
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

pub async fn put_manifest(
    c: &mut Conn,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: Bytes,
) -> Result<()> {
    let len = bytes.len().to_string();
    expect(
        c,
        Method::PUT,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("content-type", media_type), ("content-length", &len)],
        client::full(bytes),
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

/// Sends a request and drains the answer; fails unless the status is `want`.
/// Returns the body's size.
pub async fn request(
    c: &mut Conn,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    want: StatusCode,
) -> Result<u64> {
    let resp = c
        .send(method.clone(), path, headers, client::empty())
        .await?;
    let (status, n) = client::drain(resp).await?;
    if status != want {
        bail!("{method} {path}: {status} (wanted {want})");
    }
    Ok(n)
}

/// Whether `repo` serves `digest` (`HEAD` answered 200).
pub async fn has_blob(c: &mut Conn, repo: &str, digest: &str) -> Result<bool> {
    let resp = c
        .send(
            Method::HEAD,
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            client::empty(),
        )
        .await?;
    Ok(client::drain(resp).await?.0 == StatusCode::OK)
}
