//! A minimal HTTP/1.1 client: one keep-alive connection per worker, no pool, no TLS.
//!
//! Each load-generating worker owns one [`Conn`] and sends its requests on it one after
//! the other, so "N connections" means exactly N TCP connections to the server. A
//! connection the server closed is reopened before the next request.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Every request body: empty, in memory, or generated on the fly.
pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub struct Conn {
    addr: SocketAddr,
    host: String,
    /// `Authorization` sent with every request (a bearer token).
    auth: Option<String>,
    tx: Option<SendRequest<Body>>,
}

impl Conn {
    pub fn new(addr: SocketAddr, host: String) -> Self {
        Conn {
            addr,
            host,
            auth: None,
            tx: None,
        }
    }

    pub fn with_auth(mut self, auth: Option<String>) -> Self {
        self.auth = auth;
        self
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Body>> {
        let alive = match &mut self.tx {
            Some(tx) => tx.ready().await.is_ok(),
            None => false,
        };
        if !alive {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("HTTP/1.1 handshake")?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            tx.ready().await?;
            self.tx = Some(tx);
        }
        Ok(self.tx.as_mut().expect("connected above"))
    }

    /// Sends one request (`path` is origin-form: `/v2/...?query`).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Response<Incoming>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host);
        if let Some(a) = &self.auth {
            b = b.header(hyper::header::AUTHORIZATION, a);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body)?;
        let tx = self.ready().await?;
        match tx.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.tx = None;
                Err(e).with_context(|| format!("sending request to {path}"))
            }
        }
    }

    /// Sends a request and reads its whole response: status, headers, body bytes.
    pub async fn fetch(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let resp = self.send(method, path, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    /// Opens the connection (so that connecting is not timed) with a `GET /v2/`.
    pub async fn warm(&mut self) -> Result<()> {
        let (status, _, _) = self.fetch(Method::GET, "/v2/", &[], empty()).await?;
        if !(status.is_success() || status == StatusCode::UNAUTHORIZED) {
            bail!("GET /v2/ answered {status}");
        }
        Ok(())
    }
}

/// Reads a response body to its end without keeping it; returns the status and the
/// number of body bytes.
pub async fn drain(resp: Response<Incoming>) -> Result<(StatusCode, u64)> {
    let status = resp.status();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok((status, n))
}

/// The origin-form part (`/path?query`) of a `Location`, which registries give either
/// absolute (distribution) or relative (Berth).
pub fn location_path(headers: &HeaderMap) -> Result<String> {
    let loc = headers
        .get(hyper::header::LOCATION)
        .context("response has no Location")?
        .to_str()?;
    Ok(origin_form(loc).to_string())
}

/// `/path?query` of an absolute or relative URL.
pub fn origin_form(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => url,
    }
}

/// Standard base64 with padding (for HTTP Basic credentials).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `path` with `key=value` appended to its query.
pub fn with_query(path: &str, key: &str, value: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{key}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_become_origin_form() {
        let mut h = HeaderMap::new();
        h.insert(
            "location",
            "http://127.0.0.1:5001/v2/a/blobs/uploads/x?_state=abc%3D"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            location_path(&h).unwrap(),
            "/v2/a/blobs/uploads/x?_state=abc%3D"
        );
        h.insert("location", "/v2/a/blobs/uploads/y".parse().unwrap());
        assert_eq!(location_path(&h).unwrap(), "/v2/a/blobs/uploads/y");
        assert_eq!(with_query("/p", "digest", "d"), "/p?digest=d");
        assert_eq!(base64(b"bench:pw"), "YmVuY2g6cHc=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(with_query("/p?s=1", "digest", "d"), "/p?s=1&digest=d");
    }
}
