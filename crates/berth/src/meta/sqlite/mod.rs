//! SQLite metadata: the embedded default, a file inside the data directory.
//!
//! Writes go through a pool of one connection, so write transactions never contend with
//! each other inside the process (other processes, e.g. `berth user add` while the
//! server runs, wait on the busy timeout). Reads use a separate pool and, thanks to WAL,
//! never wait for a writer. Write transactions are `BEGIN IMMEDIATE`: they take the
//! write lock first, so one that read before writing can't fail with
//! `SQLITE_BUSY_SNAPSHOT` when another process committed meanwhile.
//! `synchronous = FULL`: a change acknowledged to a client is on disk.
//!
//! One file per area: `registry.rs` (repositories, blobs, manifests, tags, uploads),
//! `accounts.rs` (users, teams, tokens, audit log), `gc.rs` (garbage collection, usage).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::{now_ms, Result};

mod accounts;
mod gc;
mod registry;

/// Schema migrations, applied in order, each once, each in a transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../../migrations/sqlite/0001_registry.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_accounts.sql"),
    ),
    (3, include_str!("../../../migrations/sqlite/0003_gc.sql")),
    (4, include_str!("../../../migrations/sqlite/0004_web.sql")),
    (
        5,
        include_str!("../../../migrations/sqlite/0005_quotas.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/sqlite/0006_retention.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/sqlite/0007_upload_owner.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/sqlite/0008_secrets.sql"),
    ),
];

pub struct SqliteMetadata {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteMetadata {
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await
            .with_context(|| format!("opening SQLite database {}", path.display()))?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        Ok(SqliteMetadata { writer, reader })
    }
}

async fn migrate(pool: &SqlitePool) -> Result<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        .execute(pool)
        .await?;
    for (version, sql) in MIGRATIONS {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_none() {
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("applying migration {version}"))?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}
