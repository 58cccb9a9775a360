//! The application state every request handler shares.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use blobstore::{BlobStore, FsBlobStore, S3BlobStore, S3Config};

use crate::auth::jwt::Signer;
use crate::auth::VerifiedCache;
use crate::config::Config;
use crate::meta::accounts::{Accounts, AuditEntry, Created};
use crate::meta::gc::GcStore;
use crate::meta::postgres::{self, PostgresMetadata};
use crate::meta::{now_ms, sqlite::SqliteMetadata, Metadata};

pub type AppState = Arc<App>;

pub struct App {
    pub config: Config,
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn Metadata>,
    pub accounts: Arc<dyn Accounts>,
    pub gc: Arc<dyn GcStore>,
    pub signer: Signer,
    pub verified: VerifiedCache,
    /// Namespace quotas, read on every push (see [`crate::cache`]).
    pub quotas: crate::cache::TtlCache<String, Option<u64>>,
    /// Bearer tokens whose signature verified, by token.
    pub bearers: crate::cache::TtlCache<String, std::sync::Arc<crate::auth::jwt::Claims>>,
    /// Manifests up to 64 KiB, by digest (8 MiB at most).
    pub manifests: crate::cache::ContentCache,
    pub counters: crate::api::metrics::Counters,
}

/// The stores a configuration names, for the server and for CLI commands alike.
pub struct Stores {
    pub meta: Arc<dyn Metadata>,
    pub accounts: Arc<dyn Accounts>,
    pub gc: Arc<dyn GcStore>,
}

impl Stores {
    pub async fn open(config: &Config) -> anyhow::Result<Stores> {
        let data_dir = &config.storage.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let url = config.metadata.url.as_str();
        if url.is_empty() {
            let sqlite = Arc::new(SqliteMetadata::open(&data_dir.join("berth.db")).await?);
            return Ok(Stores {
                meta: sqlite.clone(),
                accounts: sqlite.clone(),
                gc: sqlite,
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            tracing::debug!(database = %postgres::describe(url), "opening the metadata database");
            let pg = Arc::new(PostgresMetadata::open(url, config.metadata.max_connections).await?);
            return Ok(Stores {
                meta: pg.clone(),
                accounts: pg.clone(),
                gc: pg,
            });
        }
        let scheme = url.split_once("://").map_or("(none)", |(s, _)| s);
        bail!("metadata.url: unsupported scheme {scheme:?}; leave it empty for SQLite in the data directory, or use postgres://user:password@host:port/database")
    }

    /// The blob store the configuration names. An S3 bucket is checked to answer, so
    /// a wrong endpoint or key fails at start rather than at the first push.
    pub async fn open_blobs(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
        Self::open_blobs_as(config, &config.storage.backend).await
    }

    /// The blob store of `backend` ("fs" or "s3") with the configuration's settings for
    /// it, whichever backend the configuration serves from (for migrate-storage).
    pub async fn open_blobs_as(
        config: &Config,
        backend: &str,
    ) -> anyhow::Result<Arc<dyn BlobStore>> {
        let data_dir = &config.storage.data_dir;
        match backend {
            "fs" => Ok(Arc::new(
                FsBlobStore::open(data_dir.join("blobstore"))
                    .with_context(|| format!("opening blob store in {}", data_dir.display()))?,
            )),
            "s3" => {
                let c = &config.storage.s3;
                let s3 = S3Config {
                    endpoint: c.endpoint.clone(),
                    region: c.region.clone(),
                    bucket: c.bucket.clone(),
                    prefix: c.prefix.clone(),
                    access_key_id: c.access_key_id.clone(),
                    secret_access_key: c.secret_access_key.clone(),
                    credentials_file: Some(&c.credentials_file)
                        .filter(|f| !f.is_empty())
                        .map(PathBuf::from),
                    virtual_hosted_style: c.virtual_hosted_style,
                    allow_http: c.allow_http,
                    ..S3Config::default()
                };
                let where_ = format!(
                    "S3 bucket {:?} at {}",
                    c.bucket,
                    if c.endpoint.is_empty() {
                        "AWS"
                    } else {
                        &c.endpoint
                    }
                );
                let store = S3BlobStore::open(s3)
                    .await
                    .with_context(|| format!("opening the blob store: {where_}"))?;
                Ok(Arc::new(store))
            }
            other => bail!("storage.backend = {other:?}: use \"fs\" or \"s3\""),
        }
    }
}

impl App {
    /// The garbage collector over this app's stores.
    pub fn collector(&self) -> crate::gc::Collector {
        crate::gc::Collector {
            meta: self.gc.clone(),
            blobs: self.blobs.clone(),
        }
    }

    /// Collector options from the configuration.
    pub fn gc_options(&self, trigger: &'static str, dry_run: bool) -> crate::gc::Options {
        crate::gc::Options {
            dry_run,
            grace: self.config.gc.grace_period.get(),
            untagged: self.config.gc.untagged,
            upload_expiry: self.config.gc.upload_expiry.get(),
            trigger,
        }
    }

    /// Opens the stores the configuration names, creating the data directory, and on
    /// first start (no users) the `admin` account.
    pub async fn open(config: Config) -> anyhow::Result<AppState> {
        let Stores { meta, accounts, gc } = Stores::open(&config).await?;
        let data_dir = &config.storage.data_dir;
        let blobs = Stores::open_blobs(&config).await?;
        let signer = Signer::open(
            accounts.as_ref(),
            data_dir,
            &config.auth.service,
            config.auth.token_ttl.get(),
        )
        .await?;
        if config.auth.enabled {
            bootstrap_admin(accounts.as_ref()).await?;
        }
        Ok(Arc::new(App {
            config,
            blobs,
            meta,
            accounts,
            gc,
            signer,
            verified: VerifiedCache::default(),
            quotas: Default::default(),
            bearers: crate::cache::TtlCache::new(std::time::Duration::from_secs(60)),
            manifests: crate::cache::ContentCache::new(64 << 10, 8 << 20),
            counters: Default::default(),
        }))
    }
}

/// With no user at all, creates `admin` with `BERTH_ADMIN_PASSWORD` or a random
/// password printed once.
async fn bootstrap_admin(accounts: &dyn Accounts) -> anyhow::Result<()> {
    if accounts.user_count().await? > 0 {
        return Ok(());
    }
    let (password, generated) = match std::env::var("BERTH_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (crate::auth::password::random_password(), true),
    };
    let hash = crate::auth::password::hash(&password)?;
    if let Created::Ok(_) = accounts.user_create("admin", &hash, true).await? {
        if generated {
            // Printed once, on purpose: it is the only way to learn it.
            tracing::warn!(user = "admin", password = %password, "created the first admin account; change this password");
        } else {
            tracing::info!(
                user = "admin",
                "created the first admin account from BERTH_ADMIN_PASSWORD"
            );
        }
        accounts
            .audit(AuditEntry {
                at: now_ms(),
                actor: None,
                action: "user_add".into(),
                target: Some("admin".into()),
                detail: Some("first start".into()),
                client: None,
            })
            .await?;
    }
    Ok(())
}
