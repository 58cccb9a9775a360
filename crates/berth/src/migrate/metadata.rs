//! `berth migrate-metadata`: copies the embedded SQLite database into PostgreSQL, so a
//! registry grows onto several replicas without anyone pushing again or signing in anew.
//!
//! The two engines have the same tables and columns (migrations/sqlite and
//! migrations/postgres, kept in step); this copies them table by table, parents before
//! children (by their foreign keys), converting each value to the type of the
//! PostgreSQL column (SQLite keeps booleans as integers). It reads one snapshot of the
//! SQLite file (a read transaction: a running server may keep writing meanwhile, and
//! what it writes after the snapshot is not copied — stop it for the final run) and
//! writes in one PostgreSQL transaction, so the target ends up with everything or
//! nothing. Identity sequences then continue after the highest copied id. The target
//! must be empty: merging two registries' accounts is not a copy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder, Row, ValueRef};

use crate::meta::postgres::{self, PostgresMetadata};
use crate::meta::sqlite::SqliteMetadata;

/// Rows copied per table, in copy order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub tables: Vec<(String, u64)>,
}

/// A PostgreSQL column's type, as far as copying cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Bool,
    Float,
    Text,
    Bytes,
}

impl Kind {
    fn of(data_type: &str) -> Option<Kind> {
        Some(match data_type {
            "bigint" | "integer" | "smallint" => Kind::Int,
            "boolean" => Kind::Bool,
            "double precision" | "real" | "numeric" => Kind::Float,
            "text" | "character varying" | "character" => Kind::Text,
            "bytea" => Kind::Bytes,
            _ => return None,
        })
    }
}

enum Value {
    Int(Option<i64>),
    Bool(Option<bool>),
    Float(Option<f64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

struct Table {
    name: String,
    columns: Vec<(String, Kind)>,
    identity: Vec<String>,
}

pub async fn sqlite_to_postgres(
    sqlite: &Path,
    url: &str,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> anyhow::Result<Report> {
    if !sqlite.is_file() {
        bail!("no SQLite database at {}", sqlite.display());
    }
    // Brings the source's schema up to date, so both have the same columns.
    drop(SqliteMetadata::open(sqlite).await?);
    let target = postgres::describe(url);
    // Brings the target's schema up to date too; its pool serves the copy.
    let pg = PostgresMetadata::open(url, 2).await?;
    let src_pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(sqlite).read_only(true))
        .await
        .with_context(|| format!("opening {}", sqlite.display()))?;
    let mut src = src_pool.acquire().await?;
    let mut dst = pg
        .pool()
        .acquire()
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let mut read = src.begin().await?;
    let mut tx = dst.begin().await?;

    let names = tables_in_copy_order(&mut read).await?;
    let mut tables = Vec::new();
    for name in names {
        tables.push(describe_table(&mut read, &mut tx, &name).await?);
    }
    let mut full = Vec::new();
    for t in &tables {
        let any: bool =
            sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {})", quote(&t.name)))
                .fetch_one(&mut *tx)
                .await?;
        if any {
            full.push(t.name.clone());
        }
    }
    if !full.is_empty() {
        bail!(
            "{target} already holds data (in {}): migrate-metadata copies into an empty \
             database; create a new one (CREATE DATABASE …) and point --to at it",
            full.join(", ")
        );
    }

    let mut report = Report::default();
    for t in &tables {
        let n = copy_table(&mut read, &mut tx, t).await?;
        let expected: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote(&t.name)))
            .fetch_one(&mut *read)
            .await?;
        let landed: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote(&t.name)))
            .fetch_one(&mut *tx)
            .await?;
        if n as i64 != expected || landed != expected {
            bail!(
                "table {}: {expected} rows in SQLite, {n} copied, {landed} in PostgreSQL; \
                 nothing was committed",
                t.name
            );
        }
        for col in &t.identity {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), \
                 COALESCE((SELECT MAX({c}) FROM {t}), 0) + 1, false)",
                c = quote(col),
                t = quote(&t.name)
            ))
            .bind(&t.name)
            .bind(col)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("resetting the sequence of {}.{col}", t.name))?;
        }
        progress(&t.name, n);
        report.tables.push((t.name.clone(), n));
    }
    tx.commit()
        .await
        .with_context(|| format!("committing into {target}"))?;
    read.rollback().await?;
    Ok(report)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Every table but SQLite's own and the migration bookkeeping (each engine has its
/// own), parents before children.
async fn tables_in_copy_order(src: &mut sqlx::SqliteConnection) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> 'schema_migrations' AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(&mut *src)
    .await?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for n in &names {
        let refs: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?)")
                .bind(n)
                .fetch_all(&mut *src)
                .await?;
        parents.insert(
            n.clone(),
            refs.into_iter()
                .filter(|r| r != n && names.contains(r))
                .collect(),
        );
    }
    let mut order: Vec<String> = Vec::new();
    while order.len() < names.len() {
        let ready: Vec<String> = names
            .iter()
            .filter(|n| !order.contains(n) && parents[*n].iter().all(|p| order.contains(p)))
            .cloned()
            .collect();
        if ready.is_empty() {
            bail!("the SQLite tables' foreign keys form a cycle: cannot order the copy");
        }
        order.extend(ready);
    }
    Ok(order)
}

async fn describe_table(
    src: &mut sqlx::SqliteConnection,
    dst: &mut sqlx::PgConnection,
    name: &str,
) -> anyhow::Result<Table> {
    let src_cols: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
            .bind(name)
            .fetch_all(&mut *src)
            .await?;
    let dst_cols: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_identity::text \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind(name)
    .fetch_all(&mut *dst)
    .await?;
    if dst_cols.is_empty() {
        bail!("table {name} is in SQLite but not in PostgreSQL: the schemas differ");
    }
    let mut columns = Vec::new();
    let mut identity = Vec::new();
    for c in &src_cols {
        let Some((_, ty, ident)) = dst_cols.iter().find(|(n, _, _)| n == c) else {
            bail!("column {name}.{c} is in SQLite but not in PostgreSQL: the schemas differ");
        };
        let kind = Kind::of(ty)
            .with_context(|| format!("column {name}.{c}: PostgreSQL type {ty} is not copied"))?;
        columns.push((c.clone(), kind));
        if ident == "YES" {
            identity.push(c.clone());
        }
    }
    Ok(Table {
        name: name.to_string(),
        columns,
        identity,
    })
}

fn value(row: &sqlx::sqlite::SqliteRow, i: usize, kind: Kind) -> anyhow::Result<Value> {
    let null = row.try_get_raw(i)?.is_null();
    Ok(match kind {
        Kind::Int => Value::Int(if null { None } else { Some(row.try_get(i)?) }),
        Kind::Bool => Value::Bool(if null {
            None
        } else {
            Some(row.try_get::<i64, _>(i)? != 0)
        }),
        Kind::Float => Value::Float(if null { None } else { Some(row.try_get(i)?) }),
        Kind::Text => Value::Text(if null { None } else { Some(row.try_get(i)?) }),
        Kind::Bytes => Value::Bytes(if null { None } else { Some(row.try_get(i)?) }),
    })
}

/// Rows per INSERT: PostgreSQL takes at most 65535 parameters per statement.
fn batch_rows(columns: usize) -> usize {
    (60_000 / columns.max(1)).min(2_000)
}

async fn copy_table(
    src: &mut sqlx::SqliteConnection,
    dst: &mut sqlx::PgConnection,
    t: &Table,
) -> anyhow::Result<u64> {
    let cols: Vec<String> = t.columns.iter().map(|(c, _)| quote(c)).collect();
    let select = format!("SELECT {} FROM {}", cols.join(", "), quote(&t.name));
    let mut rows = sqlx::query(&select).fetch(&mut *src);
    let mut batch: Vec<Vec<Value>> = Vec::new();
    let mut copied = 0u64;
    let per_batch = batch_rows(cols.len());
    loop {
        let row = rows.try_next().await?;
        if let Some(row) = &row {
            let mut values = Vec::with_capacity(t.columns.len());
            for (i, (name, kind)) in t.columns.iter().enumerate() {
                values.push(
                    value(row, i, *kind).with_context(|| format!("reading {}.{name}", t.name))?,
                );
            }
            batch.push(values);
        }
        if batch.len() >= per_batch || (row.is_none() && !batch.is_empty()) {
            insert(dst, t, &cols, std::mem::take(&mut batch), &mut copied).await?;
        }
        if row.is_none() {
            break;
        }
    }
    Ok(copied)
}

async fn insert(
    dst: &mut sqlx::PgConnection,
    t: &Table,
    cols: &[String],
    batch: Vec<Vec<Value>>,
    copied: &mut u64,
) -> anyhow::Result<()> {
    let n = batch.len() as u64;
    // Ids are copied as they are (tokens and sessions refer to users by id).
    let overriding = if t.identity.is_empty() {
        ""
    } else {
        "OVERRIDING SYSTEM VALUE "
    };
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "INSERT INTO {} ({}) {overriding}",
        quote(&t.name),
        cols.join(", ")
    ));
    q.push_values(batch, |mut b, row| {
        for v in row {
            match v {
                Value::Int(x) => b.push_bind(x),
                Value::Bool(x) => b.push_bind(x),
                Value::Float(x) => b.push_bind(x),
                Value::Text(x) => b.push_bind(x),
                Value::Bytes(x) => b.push_bind(x),
            };
        }
    });
    q.build()
        .execute(&mut *dst)
        .await
        .with_context(|| format!("inserting into {}", t.name))?;
    *copied += n;
    Ok(())
}
