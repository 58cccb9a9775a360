//! TLS for `berth serve`: rustls (ring), certificate chain and key from PEM files,
//! reloaded without a restart when either file changes (checked every few seconds,
//! which also catches Kubernetes' symlink swaps of mounted secrets). HTTP/2 and
//! HTTP/1.1 are offered through ALPN.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificates from {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no PEM certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    let signing = any_supported_type(&key).context("unsupported private key type")?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .context("the private key does not match the certificate")?;
    Ok(ck)
}

/// Serves the current certificate; [`watch`] replaces it when the files change.
#[derive(Debug)]
pub struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
    cert: PathBuf,
    key: PathBuf,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap().clone())
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Reloading {
    /// Polls the files and swaps in a new certificate when they change and load
    /// cleanly; a broken pair (half-written during an update) keeps the old one.
    pub async fn watch(self: Arc<Self>) {
        let mut seen = (modified(&self.cert), modified(&self.key));
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let now = (modified(&self.cert), modified(&self.key));
            if now == seen {
                continue;
            }
            match load(&self.cert, &self.key) {
                Ok(ck) => {
                    *self.current.write().unwrap() = Arc::new(ck);
                    seen = now;
                    tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                }
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "TLS certificate changed but does not load; keeping the previous one"
                ),
            }
        }
    }
}

/// A rustls server configuration for the given files, and the reloader behind it.
pub fn server_config(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<Reloading>)> {
    let first = load(cert, key)?;
    let resolver = Arc::new(Reloading {
        current: RwLock::new(Arc::new(first)),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), resolver))
}
