//! SQLite metadata: the embedded default, a file inside the data directory.
//!
//! Writes go through a pool of one connection, so write transactions never contend with
//! each other inside the process (other processes, e.g. `berth user add` while the
//! server runs, wait on the busy timeout). Reads use a separate pool and, thanks to WAL,
//! never wait for a writer. Write transactions are `BEGIN IMMEDIATE`: they take the
//! write lock first, so one that read before writing can't fail with
//! `SQLITE_BUSY_SNAPSHOT` when another process committed meanwhile.
//!
//! Durability is a group commit: the connections run `synchronous = NORMAL` (a commit
//! writes the WAL but does not sync it), and every write method then calls
//! [`SqliteMetadata::durable`], which `fdatasync`s the WAL before returning. Callers
//! that arrive while a sync is running wait for the next one, which then covers all of
//! them: under concurrent pushes one sync acknowledges many commits, and the single
//! writer connection never waits for the disk. A change acknowledged to a client is on
//! disk, as with `synchronous = FULL`, but commits no longer queue behind each other's
//! syncs. (A checkpoint syncs the WAL before copying it into the database and the
//! database before the WAL is reused, so a commit is either in the synced WAL or in the
//! synced database file.)
//!
//! One write is the exception: opening an upload session (`upload_create`) does not
//! wait for a sync. Nothing acknowledged depends on it: the blob the session ends in is
//! linked by `link_blob`, whose sync covers everything committed before it. A session
//! row is lost only if the machine loses power before the next sync (a killed process
//! loses nothing: its commits are in the WAL in the OS's cache); its client is then
//! told the session is unknown and starts again, and its file is an orphan upload that
//! the collector removes after `gc.upload_expiry`.
//!
//! One file per area: `registry.rs` (repositories, blobs, manifests, tags, uploads),
//! `accounts.rs` (users, teams, tokens, audit log), `gc.rs` (garbage collection, usage).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    (
        9,
        include_str!("../../../migrations/sqlite/0009_login_failures.sql"),
    ),
];

pub struct SqliteMetadata {
    writer: SqlitePool,
    reader: SqlitePool,
    wal: WalSync,
}

/// The group commit of the write-ahead log (see the module documentation).
struct WalSync {
    path: PathBuf,
    /// Commits that asked to be made durable, and how many of them are.
    asked: AtomicU64,
    synced: AtomicU64,
    /// Syncs run (for the tests).
    runs: AtomicU64,
    /// Held while a sync runs.
    running: tokio::sync::Mutex<()>,
}

impl WalSync {
    fn new(db: &Path) -> WalSync {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        WalSync {
            path: path.into(),
            asked: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Returns once everything committed before the call is on disk.
    async fn sync(&self) -> Result<()> {
        // Taken after the caller's commit returned: a sync that starts after this
        // ticket was handed out covers that commit.
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = self.running.lock().await;
        if self.synced.load(Ordering::SeqCst) >= ticket {
            return Ok(()); // a sync that started after our commit has finished
        }
        let covers = self.asked.load(Ordering::SeqCst);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
            Ok(f) => f.sync_data(),
            // No WAL: the last connection closed, which checkpointed it into the
            // (synced) database file and removed it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .context("syncing the SQLite write-ahead log")?
        .context("syncing the SQLite write-ahead log")?;
        self.synced.store(covers, Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl SqliteMetadata {
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await
            .with_context(|| format!("opening SQLite database {}", path.display()))?;
        let wal = WalSync::new(path);
        if migrate(&writer).await? {
            wal.sync().await?;
        }
        // Readers connect on first use; one is opened in the background now, so
        // starting does not wait for it and the first read usually finds it ready.
        // Each keeps a page cache of 512 KiB instead of SQLite's 2 MiB: the hot lookups
        // touch a few index pages, the file is in the kernel's page cache anyway, and
        // eight readers that had each cached 2 MiB of a listing over 100,000
        // repositories kept a server that had served it 16 MiB larger for good.
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_lazy_with(opts.pragma("cache_size", "-512"));
        let warm = reader.clone();
        tokio::spawn(async move {
            if let Err(e) = warm.acquire().await {
                tracing::warn!(error = %e, "opening a reader connection to SQLite");
            }
        });
        Ok(SqliteMetadata {
            writer,
            reader,
            wal,
        })
    }

    /// Makes every write committed so far durable; each write method calls it after
    /// its commit, before returning.
    async fn durable(&self) -> Result<()> {
        self.wal.sync().await
    }
}

/// Applies the migrations the database lacks; true if it applied any. An up-to-date
/// database costs two statements and no write transaction.
async fn migrate(pool: &SqlitePool) -> Result<bool> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        .execute(pool)
        .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(pool)
        .await?;
    let mut changed = false;
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        // Checked again under the write lock: a process starting at the same moment
        // may have applied it since.
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
            changed = true;
        }
        tx.commit().await?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::meta::accounts::Accounts;
    use crate::meta::Metadata;

    /// The first open applies the migrations and makes them durable; opening an
    /// up-to-date database, and reading the signing key stored by an earlier start,
    /// write nothing and sync nothing (start-up time).
    #[tokio::test]
    async fn reopening_an_up_to_date_database_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        let runs = |m: &SqliteMetadata| m.wal.runs.load(Ordering::SeqCst);
        let first = SqliteMetadata::open(&path).await.unwrap();
        assert_eq!(runs(&first), 1, "the migrations are synced");
        let key = first.signing_key("key one").await.unwrap();
        assert_eq!((key.as_str(), runs(&first)), ("key one", 2));
        drop(first);

        let again = SqliteMetadata::open(&path).await.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM schema_migrations")
            .fetch_one(&again.reader)
            .await
            .unwrap();
        assert_eq!(applied as usize, MIGRATIONS.len());
        assert_eq!(again.signing_key("key two").await.unwrap(), "key one");
        assert_eq!(runs(&again), 0, "nothing was written, nothing synced");
    }

    /// Every write waits for a sync of the WAL that started after its commit, and
    /// writes committed while a sync runs share the next one.
    #[tokio::test]
    async fn writes_wait_for_a_sync_of_the_log_and_share_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        let m = Arc::new(SqliteMetadata::open(&path).await.unwrap());
        let repo: oci::RepoName = "alice/app".parse().unwrap();
        let runs = |m: &SqliteMetadata| m.wal.runs.load(Ordering::SeqCst);
        let before = runs(&m);
        m.user_create("user-first", "hash", false).await.unwrap();
        assert_eq!(runs(&m), before + 1, "one write, one sync");
        // Opening an upload session is the one write that does not wait for a sync.
        m.upload_create(uuid::Uuid::new_v4(), &repo, "alice")
            .await
            .unwrap();
        assert_eq!(runs(&m), before + 1, "an upload session waits for no sync");

        // A sync is running (the test holds its place): 64 writes commit meanwhile,
        // and none of them returns before a sync that covers it.
        let sync_running = m.wal.running.lock().await;
        let before = runs(&m);
        let asked = m.wal.asked.load(Ordering::SeqCst);
        let writes: Vec<_> = (0..64)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(
                    async move { m.user_create(&format!("user-{i}"), "hash", false).await },
                )
            })
            .collect();
        while m.wal.asked.load(Ordering::SeqCst) < asked + 64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            writes.iter().all(|w| !w.is_finished()),
            "a write returned before its commit was synced"
        );
        drop(sync_running);
        for w in writes {
            w.await.unwrap().unwrap();
        }
        assert_eq!(
            runs(&m) - before,
            1,
            "64 writes committed during a sync share the next"
        );

        // What was acknowledged is in the database, for another connection too.
        drop(m);
        let again = SqliteMetadata::open(&path).await.unwrap();
        assert_eq!(again.user_count().await.unwrap(), 65);
        assert_eq!(again.uploads_open("alice").await.unwrap(), 1);
    }
}
