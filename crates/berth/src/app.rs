//! The application state every request handler shares.

use std::sync::Arc;

use anyhow::{bail, Context};
use blobstore::{BlobStore, FsBlobStore};

use crate::config::Config;
use crate::meta::{sqlite::SqliteMetadata, Metadata};

pub type AppState = Arc<App>;

pub struct App {
    pub config: Config,
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn Metadata>,
}

impl App {
    /// Opens the stores the configuration names, creating the data directory.
    pub async fn open(config: Config) -> anyhow::Result<AppState> {
        let data_dir = &config.storage.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let blobs: Arc<dyn BlobStore> = match config.storage.backend.as_str() {
            "fs" => Arc::new(
                FsBlobStore::open(data_dir.join("blobstore"))
                    .with_context(|| format!("opening blob store in {}", data_dir.display()))?,
            ),
            other => {
                bail!("storage.backend = {other:?} is not supported by this build yet; use \"fs\"")
            }
        };
        let meta: Arc<dyn Metadata> = if config.metadata.url.is_empty() {
            Arc::new(SqliteMetadata::open(&data_dir.join("berth.db")).await?)
        } else {
            bail!("metadata.url: only the embedded SQLite database is supported by this build yet; leave it empty")
        };
        Ok(Arc::new(App {
            config,
            blobs,
            meta,
        }))
    }
}
