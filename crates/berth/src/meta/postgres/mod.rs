//! PostgreSQL metadata: what several replicas share (issue 9).
//!
//! SQLite gets its guarantees from having one writer; here several processes write at
//! once, each with its own pool, at READ COMMITTED. What SQLite's write lock gave us is
//! rebuilt from two pieces:
//!
//! - **The collector lock**, a transaction-scoped advisory lock. Recording a blob or a
//!   manifest (`link_blob`, `put_manifest`: the transactions that ask
//!   [`Presence`](crate::meta::Presence) and check references) takes it *shared*, and
//!   so do the deletions of many rows at once (`delete_repository`, `account_delete`),
//!   which could otherwise deadlock with a collector deleting some of the same rows in
//!   another order. Every collector transaction that decides something is garbage and
//!   acts on it (forgetting blobs, tombstoning orphans, deleting files, unreachable
//!   manifests, retention, fsck's repairs) takes it *exclusive*. So a collector
//!   transaction and a push never interleave, exactly as under SQLite's write lock,
//!   while pushes still run in parallel with each other. A collector statement runs
//!   after it got the lock, so at READ COMMITTED it sees every push that went before; a
//!   push that comes after sees the collector's deletions (the file gone → `Vanished`,
//!   the reference gone → `MissingReference`).
//! - **Single-statement upserts** wherever pushes race each other: `ON CONFLICT` makes
//!   two replicas recording the same blob, manifest or tag agree (the last tag wins, as
//!   the last of two serial pushes would). A repository is created with `ON CONFLICT DO
//!   NOTHING` and then read with a key-share lock, not upserted, so pushes to one
//!   repository do not queue on its row, and deleting it waits for them to commit.
//!
//! Each remaining single statement (deleting a tag, a manifest, a link) touches one row
//! and what cascades from it, so none can deadlock with the above. Should a deadlock
//! happen anyway, the push paths run their transaction again
//! ([`retry_conflicts`](crate::meta::retry_conflicts)) and anything else answers 503.
//!
//! The collector's lease is one upsert whose `WHERE` is evaluated on the locked,
//! current row, so of two replicas racing for it exactly one wins; its expiry uses the
//! database's clock, which all replicas share, not each replica's own.
//!
//! Migrations: the same numbered files as SQLite's, in PostgreSQL's dialect, each once
//! and in its own transaction, serialised across replicas starting together by
//! `pg_advisory_xact_lock`.
//!
//! One file per area, as for SQLite: `registry.rs`, `accounts.rs`, `gc.rs`.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres, Transaction};

use super::{now_ms, Result};

mod accounts;
mod gc;
mod registry;

/// Schema migrations, applied in order, each once, each in a transaction.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../../migrations/postgres/0001_registry.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/postgres/0002_accounts.sql"),
    ),
    (3, include_str!("../../../migrations/postgres/0003_gc.sql")),
    (4, include_str!("../../../migrations/postgres/0004_web.sql")),
    (
        5,
        include_str!("../../../migrations/postgres/0005_quotas.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/postgres/0006_retention.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/postgres/0007_upload_owner.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/postgres/0008_secrets.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/postgres/0009_login_failures.sql"),
    ),
];

/// Advisory lock keys (one namespace of 64-bit keys per database): "berth:gc" and
/// "berth:mg" in ASCII.
const COLLECTOR_LOCK: i64 = 0x6265_7274_683a_6763;
const MIGRATION_LOCK: i64 = 0x6265_7274_683a_6d67;

/// The database's clock in Unix milliseconds: the lease's expiry is compared on one
/// clock whatever replica asks.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

pub struct PostgresMetadata {
    pool: PgPool,
}

/// Where a URL points, without its password: for logs and error messages.
pub fn describe(url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(o) => format!(
            "postgres://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or(o.get_username())
        ),
        Err(_) => "an invalid PostgreSQL URL".into(),
    }
}

impl PostgresMetadata {
    /// Connects, and brings the schema up to date.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)
            .context("metadata.url is not a valid PostgreSQL URL")?;
        let target = format!(
            "PostgreSQL at {}:{} (database {:?}, user {:?})",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or(opts.get_username()),
            opts.get_username()
        );
        // One connection first: a pool would retry until its timeout and then report
        // only that it timed out, not why (refused, unknown host, authentication).
        sqlx::PgConnection::connect_with(&opts)
            .await
            .with_context(|| format!("connecting to {target}"))?
            .close()
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            // A request that cannot get a connection this long (the server restarting
            // or failing over) answers 503 with Retry-After instead of hanging.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .with_context(|| format!("connecting to {target}"))?;
        migrate(&pool)
            .await
            .with_context(|| format!("migrating the schema in {target}"))?;
        Ok(PostgresMetadata { pool })
    }

    /// The pool, for bulk work beside the traits (`berth migrate-metadata`).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction that records a blob or manifest, or deletes a repository: shares
    /// the collector lock.
    async fn shared_tx(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(COLLECTOR_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A collector transaction: excludes every push until it commits.
    async fn gc_tx(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(COLLECTOR_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

async fn migrate(pool: &PgPool) -> Result<()> {
    for (version, sql) in MIGRATIONS {
        let mut tx = pool.begin().await?;
        // Held to the transaction's end: a replica starting at the same moment waits,
        // then finds the migration done.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        // Checked rather than CREATE … IF NOT EXISTS, whose notice would be logged on
        // every start for every migration.
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            sqlx::raw_sql(
                "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
        }
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_none() {
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("applying migration {version}"))?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Client text for a `TEXT` value. PostgreSQL's text can't hold NUL (SQLite's can),
/// so a NUL would fail the statement and turn, say, a login with a forged user name
/// into a 500. As U+FFFD it matches no name or digest (those are validated ASCII), so
/// lookups answer "none" as on SQLite, and free text (audit details) keeps the rest.
fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// A pagination cursor (`name > last`) cut at its first NUL: stored names contain none,
/// so in byte order they compare with the cut cursor exactly as with the whole one.
fn before_nul(s: &str) -> &str {
    s.split('\0').next().unwrap_or(s)
}

/// A retention glob (`*`, `?`, otherwise literal) as a `LIKE … ESCAPE '\'` pattern.
fn glob_to_like(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_like_patterns() {
        assert_eq!(glob_to_like("team/*"), "team/%");
        assert_eq!(glob_to_like("v?.*_x%"), "v_.%\\_x\\%");
    }

    #[test]
    fn described_urls_have_no_password() {
        let d = describe("postgres://berth:s3cret@db.example.com:6543/reg");
        assert_eq!(d, "postgres://berth@db.example.com:6543/reg");
        assert!(!describe("postgresql://u:pw@h/d").contains("pw"));
    }
}
