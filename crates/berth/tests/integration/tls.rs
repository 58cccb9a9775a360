//! HTTPS: rustls with the configured PEM files, HTTP/2 through ALPN, and the
//! certificate reloaded without a restart when the files change.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a fresh self-signed certificate for 127.0.0.1/localhost; returns its PEM.
fn write_cert(dir: &Path) -> String {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = ck.cert.pem();
    // Key first, then certificate: the server must not mind either order.
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert).unwrap();
    cert
}

fn client_trusting(pem: &str, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .https_only(true)
        .pool_max_idle_per_host(0);
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn serves_https_with_http2_and_reloads_the_certificate() {
    if std::env::var("BERTH_TEST_EXTERNAL_URL").is_ok() {
        eprintln!("SKIPPED: starts its own berth with TLS");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert_a = write_cert(dir.path());
    let port = free_port();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "serve",
                "--no-auth",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env("BERTH_SERVER__TLS_CERT", dir.path().join("cert.pem"))
            .env("BERTH_SERVER__TLS_KEY", dir.path().join("key.pem"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://127.0.0.1:{port}/v2/");
    let a = client_trusting(&cert_a, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let resp = loop {
        match a.get(&url).send().await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "no HTTPS answer: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "HTTP/2 is negotiated over TLS"
    );
    let resp = client_trusting(&cert_a, true)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, reqwest::Version::HTTP_11)
    );

    // Plain HTTP on the TLS port gets no registry answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v2/"))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));

    // Replace the certificate; new connections get the new one, without a restart.
    let cert_b = write_cert(dir.path());
    let b = client_trusting(&cert_b, false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = b.get(&url).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        client_trusting(&cert_a, false)
            .get(&url)
            .send()
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
}
