//! Garbage-collection queries in SQLite. See `meta::gc` for the deletion protocol;
//! its "under the write lock" is a `BEGIN IMMEDIATE` transaction here.

use std::collections::HashSet;
use std::str::FromStr;

use anyhow::Context;
use async_trait::async_trait;
use oci::Digest;
use sqlx::Row;
use uuid::Uuid;

use super::SqliteMetadata;
use crate::meta::gc::{
    delete_files, DanglingRef, DeleteFile, GcReport, GcRun, GcStore, NamespaceUsage, Retained,
    RetentionRule, Usage,
};
use crate::meta::{now_ms, Result};

/// Manifests a tag reaches, per repository: tagged ones, children of reachable
/// indexes, and referrers of reachable manifests.
const REACHABLE: &str = "WITH RECURSIVE live(repo_id, digest) AS (
        SELECT repo_id, digest FROM tags
        UNION
        SELECT mr.repo_id, mr.child FROM manifest_refs mr
          JOIN live l ON mr.repo_id = l.repo_id AND mr.manifest = l.digest
          WHERE mr.kind = 1
        UNION
        SELECT m.repo_id, m.digest FROM manifests m
          JOIN live l ON m.repo_id = l.repo_id AND m.subject = l.digest
    )";

/// A blob that nothing references and nothing recorded after the cutoff.
const GARBAGE: &str = "b.created_at <= ?1
      AND NOT EXISTS (SELECT 1 FROM manifest_refs mr WHERE mr.child = b.digest)
      AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest)
      AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND rb.created_at > ?1)";

/// Digests as one JSON array of strings, for `json_each(?)`: SQLite binds no arrays.
fn json_digests<'a>(digests: impl Iterator<Item = &'a Digest>) -> String {
    let all: Vec<String> = digests.map(|d| d.to_string()).collect();
    serde_json::to_string(&all).expect("strings serialise")
}

fn digest(s: &str) -> Result<Digest> {
    Digest::from_str(s).with_context(|| format!("corrupt digest {s:?} in metadata"))
}

#[async_trait]
impl GcStore for SqliteMetadata {
    async fn gc_lease(&self, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_ms();
        let r = sqlx::query(
            "INSERT INTO gc_lease (id, holder, expires_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET holder = ?1, expires_at = ?2
             WHERE gc_lease.holder = ?1 OR gc_lease.expires_at < ?3",
        )
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn gc_release(&self, holder: &str) -> Result<()> {
        sqlx::query("UPDATE gc_lease SET expires_at = 0 WHERE holder = ?")
            .bind(holder)
            .execute(&self.writer)
            .await?;
        self.durable().await?;
        Ok(())
    }

    async fn gc_lease_held(&self) -> Result<bool> {
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM gc_lease WHERE id = 1 AND holder != '' AND expires_at >= ?",
        )
        .bind(now_ms())
        .fetch_optional(&self.reader)
        .await?;
        Ok(held.is_some())
    }

    async fn gc_run_start(&self, trigger: &str, dry_run: bool, grace_ms: i64) -> Result<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO gc_runs (started_at, trigger, dry_run, grace_ms) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(now_ms())
        .bind(trigger)
        .bind(dry_run as i64)
        .bind(grace_ms)
        .fetch_one(&self.writer)
        .await?;
        self.durable().await?;
        Ok(id)
    }

    async fn gc_run_finish(&self, id: i64, r: &GcReport, error: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE gc_runs SET finished_at = ?, tags_deleted = ?, manifests_deleted = ?, blobs_deleted = ?,
             bytes_freed = ?, uploads_expired = ?, error = ? WHERE id = ?",
        )
        .bind(now_ms())
        .bind(r.tags_deleted as i64)
        .bind(r.manifests_deleted as i64)
        .bind(r.blobs_deleted as i64)
        .bind(r.bytes_freed as i64)
        .bind(r.uploads_expired as i64)
        .bind(error)
        .bind(id)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(())
    }

    async fn gc_runs(&self, limit: u32) -> Result<Vec<GcRun>> {
        let rows = sqlx::query("SELECT * FROM gc_runs ORDER BY id DESC LIMIT ?")
            .bind(limit as i64)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|r| GcRun {
                id: r.get("id"),
                started_at: r.get("started_at"),
                finished_at: r.get("finished_at"),
                trigger: r.get("trigger"),
                dry_run: r.get::<i64, _>("dry_run") != 0,
                grace_ms: r.get("grace_ms"),
                report: GcReport {
                    tags_deleted: r.get::<i64, _>("tags_deleted") as u64,
                    manifests_deleted: r.get::<i64, _>("manifests_deleted") as u64,
                    blobs_deleted: r.get::<i64, _>("blobs_deleted") as u64,
                    bytes_freed: r.get::<i64, _>("bytes_freed") as u64,
                    uploads_expired: r.get::<i64, _>("uploads_expired") as u64,
                },
                error: r.get("error"),
            })
            .collect())
    }

    async fn gc_delete_unreachable_manifests(&self, cutoff: i64, dry_run: bool) -> Result<u64> {
        let dead = format!(
            "{REACHABLE} SELECT m.repo_id, m.digest FROM manifests m
             WHERE m.created_at <= ? AND NOT EXISTS
               (SELECT 1 FROM live l WHERE l.repo_id = m.repo_id AND l.digest = m.digest)"
        );
        if dry_run {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ({dead})"))
                .bind(cutoff)
                .fetch_one(&self.reader)
                .await?;
            return Ok(n as u64);
        }
        // One statement in one transaction: reachability is decided and acted on under
        // the write lock, so a tag pushed meanwhile either counts or waits.
        let r = sqlx::query(&format!(
            "DELETE FROM manifests WHERE (repo_id, digest) IN ({dead})"
        ))
        .bind(cutoff)
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(r.rows_affected())
    }

    async fn gc_blob_candidates(&self, cutoff: i64) -> Result<Vec<(Digest, u64)>> {
        let rows = sqlx::query(&format!(
            "SELECT b.digest, b.size FROM blobs b WHERE {GARBAGE}"
        ))
        .bind(cutoff)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((digest(r.get("digest"))?, r.get::<i64, _>("size") as u64)))
            .collect()
    }

    async fn gc_forget_blobs(
        &self,
        candidates: &[Digest],
        cutoff: i64,
    ) -> Result<Vec<(Digest, u64)>> {
        // Set-based (the batch bound as one JSON array): a statement per step, not per
        // blob, since every statement is a hand-off to SQLite's connection thread.
        let candidates = json_digests(candidates.iter());
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(&format!(
            "SELECT b.digest, b.size FROM blobs b
             WHERE b.digest IN (SELECT value FROM json_each(?2)) AND {GARBAGE}
             ORDER BY b.digest"
        ))
        .bind(cutoff)
        .bind(&candidates)
        .fetch_all(&mut *tx)
        .await?;
        let gone = rows
            .iter()
            .map(|r| Ok((digest(r.get("digest"))?, r.get::<i64, _>("size") as u64)))
            .collect::<Result<Vec<_>>>()?;
        if !gone.is_empty() {
            let doomed = json_digests(gone.iter().map(|(d, _)| d));
            sqlx::query("DELETE FROM repo_blobs WHERE digest IN (SELECT value FROM json_each(?))")
                .bind(&doomed)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO gc_tombstones (digest, size, created_at)
                 SELECT digest, size, ?2 FROM blobs WHERE digest IN (SELECT value FROM json_each(?1))
                 ON CONFLICT DO NOTHING",
            )
            .bind(&doomed)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM blobs WHERE digest IN (SELECT value FROM json_each(?))")
                .bind(&doomed)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.durable().await?;
        Ok(gone)
    }

    async fn gc_tombstone_orphans(&self, digests: &[(Digest, u64)]) -> Result<u64> {
        let rows = serde_json::to_string(
            &digests
                .iter()
                .map(|(d, size)| (d.to_string(), *size))
                .collect::<Vec<_>>(),
        )?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let r = sqlx::query(
            "INSERT INTO gc_tombstones (digest, size, created_at)
             SELECT value ->> 0, value ->> 1, ?2 FROM json_each(?1)
             WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = value ->> 0)
             ON CONFLICT DO NOTHING",
        )
        .bind(&rows)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.durable().await?;
        Ok(r.rows_affected())
    }

    async fn gc_delete_files(&self, limit: u32, delete: DeleteFile<'_>) -> Result<(u64, u64)> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let batch: Vec<String> =
            sqlx::query_scalar("SELECT digest FROM gc_tombstones ORDER BY digest LIMIT ?")
                .bind(limit as i64)
                .fetch_all(&mut *tx)
                .await?;
        let json = serde_json::to_string(&batch)?;
        let relinked: HashSet<String> = sqlx::query_scalar(
            "SELECT digest FROM blobs WHERE digest IN (SELECT value FROM json_each(?))",
        )
        .bind(&json)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let deleted = delete_files(&batch, &relinked, delete).await?;
        sqlx::query("DELETE FROM gc_tombstones WHERE digest IN (SELECT value FROM json_each(?))")
            .bind(&json)
            .execute(&mut *tx)
            .await?;
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM gc_tombstones")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        self.durable().await?;
        Ok((deleted, left as u64))
    }

    async fn blobs_known(&self, digests: &[Digest]) -> Result<Vec<bool>> {
        let names: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
        let known: HashSet<String> = sqlx::query_scalar(
            "SELECT digest FROM blobs WHERE digest IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(&names)?)
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .collect();
        Ok(names.iter().map(|d| known.contains(d)).collect())
    }

    async fn expired_uploads(&self, cutoff: i64) -> Result<Vec<Uuid>> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM uploads WHERE created_at < ?")
            .bind(cutoff)
            .fetch_all(&self.reader)
            .await?;
        Ok(ids.iter().filter_map(|i| i.parse().ok()).collect())
    }

    async fn gc_forget_upload(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        self.durable().await?;
        Ok(())
    }

    async fn usage(&self) -> Result<Usage> {
        let (total, blobs): (i64, i64) =
            sqlx::query_as("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM blobs")
                .fetch_one(&self.reader)
                .await?;
        // A namespace is the first path component of a repository name. One pass over
        // the links, grouped: no per-namespace subquery.
        let rows = sqlx::query(
            "WITH ns AS (
                SELECT id, CASE WHEN instr(name, '/') > 0 THEN substr(name, 1, instr(name, '/') - 1) ELSE name END AS namespace
                FROM repositories
             ),
             linked AS (
                SELECT ns.namespace, rb.digest FROM repo_blobs rb JOIN ns ON ns.id = rb.repo_id
                UNION
                SELECT ns.namespace, m.digest FROM manifests m JOIN ns ON ns.id = m.repo_id
             ),
             sizes AS (
                SELECT l.namespace, SUM(b.size) AS bytes FROM linked l JOIN blobs b ON b.digest = l.digest
                GROUP BY l.namespace
             ),
             counts AS (SELECT namespace, COUNT(*) AS repositories FROM ns GROUP BY namespace)
             SELECT c.namespace, c.repositories, COALESCE(s.bytes, 0) AS bytes, q.bytes AS quota
             FROM counts c LEFT JOIN sizes s ON s.namespace = c.namespace
                           LEFT JOIN quotas q ON q.namespace = c.namespace
             UNION ALL
             SELECT q.namespace, 0, 0, q.bytes FROM quotas q
             WHERE NOT EXISTS (SELECT 1 FROM counts c WHERE c.namespace = q.namespace)
             ORDER BY bytes DESC, 1",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(Usage {
            total_bytes: total as u64,
            blobs: blobs as u64,
            namespaces: rows
                .iter()
                .map(|r| NamespaceUsage {
                    namespace: r.get("namespace"),
                    bytes: r.get::<i64, _>("bytes") as u64,
                    repositories: r.get::<i64, _>("repositories") as u64,
                    quota: r.get::<Option<i64>, _>("quota").map(|q| q as u64),
                })
                .collect(),
        })
    }

    async fn namespace_bytes(
        &self,
        namespace: &str,
        digest: Option<&Digest>,
    ) -> Result<(u64, bool)> {
        // The namespace: the repository named exactly `namespace` and everything under
        // `namespace/` ('0' is the character after '/'), a range on the name's index.
        let row = sqlx::query(
            "WITH repos AS (
                SELECT id FROM repositories WHERE name = ?1 OR (name >= ?1 || '/' AND name < ?1 || '0')
             ),
             linked AS (
                SELECT rb.digest FROM repo_blobs rb WHERE rb.repo_id IN (SELECT id FROM repos)
                UNION
                SELECT m.digest FROM manifests m WHERE m.repo_id IN (SELECT id FROM repos)
             )
             SELECT COALESCE((SELECT SUM(b.size) FROM linked l JOIN blobs b ON b.digest = l.digest), 0) AS bytes,
                    EXISTS (SELECT 1 FROM linked WHERE digest = ?2) AS has",
        )
        .bind(namespace)
        .bind(digest.map(|d| d.to_string()))
        .fetch_one(&self.reader)
        .await?;
        Ok((
            row.get::<i64, _>("bytes") as u64,
            row.get::<i64, _>("has") != 0,
        ))
    }

    async fn fsck_blob_rows(&self, after: Option<&str>, n: u32) -> Result<Vec<(Digest, u64)>> {
        let rows = sqlx::query(
            "SELECT digest, size FROM blobs WHERE (?1 IS NULL OR digest > ?1) ORDER BY digest LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(n))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let d: String = r.get("digest");
                Ok((
                    Digest::from_str(&d).with_context(|| format!("blob row {d:?}"))?,
                    r.get::<i64, _>("size") as u64,
                ))
            })
            .collect()
    }

    async fn fsck_dangling_refs(&self) -> Result<Vec<DanglingRef>> {
        let rows = sqlx::query(
            "SELECT r.name AS repo, mr.manifest, mr.child, mr.kind FROM manifest_refs mr
             JOIN repositories r ON r.id = mr.repo_id
             WHERE (mr.kind = 0 AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = mr.child))
                OR (mr.kind = 1 AND NOT EXISTS (SELECT 1 FROM manifests m
                                                WHERE m.repo_id = mr.repo_id AND m.digest = mr.child))
             ORDER BY r.name, mr.manifest, mr.child",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| DanglingRef {
                repo: r.get("repo"),
                manifest: r.get("manifest"),
                child: r.get("child"),
                is_manifest: r.get::<i64, _>("kind") == 1,
            })
            .collect())
    }

    async fn fsck_users_of(&self, digest: &Digest) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "WITH direct AS (
                SELECT repo_id, digest AS manifest FROM manifests WHERE digest = ?1
                UNION
                SELECT repo_id, manifest FROM manifest_refs WHERE child = ?1
             ),
             users AS (
                SELECT repo_id, manifest FROM direct
                UNION
                SELECT mr.repo_id, mr.manifest FROM manifest_refs mr
                JOIN direct d ON d.repo_id = mr.repo_id AND mr.child = d.manifest AND mr.kind = 1
             )
             SELECT r.name AS repo, u.manifest,
                    (SELECT group_concat(t.name, ', ') FROM tags t
                     WHERE t.repo_id = u.repo_id AND t.digest = u.manifest) AS tags
             FROM users u JOIN repositories r ON r.id = u.repo_id
             ORDER BY r.name, u.manifest LIMIT 1000",
        )
        .bind(digest.to_string())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let repo: String = r.get("repo");
                let m: String = r.get("manifest");
                match r.get::<Option<String>, _>("tags") {
                    Some(t) => format!("{repo}@{m} (tags: {t})"),
                    None => format!("{repo}@{m} (untagged)"),
                }
            })
            .collect())
    }

    async fn fsck_forget_blob(&self, digest: &Digest) -> Result<()> {
        let d = digest.to_string();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        // Manifests whose own bytes are this blob go, with their tags and references.
        sqlx::query("DELETE FROM manifests WHERE digest = ?")
            .bind(&d)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM repo_blobs WHERE digest = ?")
            .bind(&d)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM blobs WHERE digest = ?")
            .bind(&d)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.durable().await?;
        Ok(())
    }

    async fn fsck_drop_dangling(&self) -> Result<Vec<String>> {
        let mut dropped = Vec::new();
        loop {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let rows = sqlx::query(
                "SELECT DISTINCT mr.repo_id, r.name AS repo, mr.manifest,
                        (SELECT group_concat(t.name, ', ') FROM tags t
                         WHERE t.repo_id = mr.repo_id AND t.digest = mr.manifest) AS tags
                 FROM manifest_refs mr JOIN repositories r ON r.id = mr.repo_id
                 WHERE (mr.kind = 0 AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = mr.child))
                    OR (mr.kind = 1 AND NOT EXISTS (SELECT 1 FROM manifests m
                                                    WHERE m.repo_id = mr.repo_id AND m.digest = mr.child))",
            )
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                return Ok(dropped);
            }
            for r in &rows {
                sqlx::query("DELETE FROM manifests WHERE repo_id = ? AND digest = ?")
                    .bind(r.get::<i64, _>("repo_id"))
                    .bind(r.get::<String, _>("manifest"))
                    .execute(&mut *tx)
                    .await?;
                let (repo, m): (String, String) = (r.get("repo"), r.get("manifest"));
                dropped.push(match r.get::<Option<String>, _>("tags") {
                    Some(t) => format!("{repo}@{m} (tags: {t})"),
                    None => format!("{repo}@{m} (untagged)"),
                });
            }
            tx.commit().await?;
            self.durable().await?;
        }
    }

    async fn retention_rules(&self) -> Result<Vec<RetentionRule>> {
        let rows = sqlx::query("SELECT * FROM retention_rules ORDER BY id")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|r| RetentionRule {
                id: r.get("id"),
                repositories: r.get("repositories"),
                tags: r.get("tags"),
                keep_tags: r.get::<Option<i64>, _>("keep_tags").map(|n| n as i32),
                untagged_days: r.get::<Option<i64>, _>("untagged_days").map(|n| n as i32),
            })
            .collect())
    }

    async fn retention_add(&self, rule: &RetentionRule) -> Result<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO retention_rules (repositories, tags, keep_tags, untagged_days, created_at)
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&rule.repositories)
        .bind(&rule.tags)
        .bind(rule.keep_tags.map(i64::from))
        .bind(rule.untagged_days.map(i64::from))
        .bind(now_ms())
        .fetch_one(&self.writer)
        .await?;
        self.durable().await?;
        Ok(id)
    }

    async fn retention_remove(&self, id: i64) -> Result<bool> {
        let r = sqlx::query("DELETE FROM retention_rules WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?;
        self.durable().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn retention_tags(
        &self,
        rule: &RetentionRule,
        cutoff: i64,
        dry_run: bool,
    ) -> Result<Vec<Retained>> {
        let Some(keep) = rule.keep_tags else {
            return Ok(Vec::new());
        };
        // Decided and acted on in one write transaction: a tag pushed meanwhile waits
        // and counts among the newest next time.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT repo_id, repo, tag FROM (
                SELECT t.repo_id, r.name AS repo, t.name AS tag, t.updated_at,
                       ROW_NUMBER() OVER (PARTITION BY t.repo_id ORDER BY t.updated_at DESC, t.name DESC) AS n
                FROM tags t JOIN repositories r ON r.id = t.repo_id
                WHERE r.name GLOB ?1 AND t.name GLOB ?2
             ) WHERE n > ?3 AND updated_at <= ?4 ORDER BY repo, tag",
        )
        .bind(&rule.repositories)
        .bind(&rule.tags)
        .bind(i64::from(keep))
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let tag: String = r.get("tag");
            if !dry_run {
                sqlx::query("DELETE FROM tags WHERE repo_id = ? AND name = ?")
                    .bind(r.get::<i64, _>("repo_id"))
                    .bind(&tag)
                    .execute(&mut *tx)
                    .await?;
            }
            out.push(Retained::Tag {
                repo: r.get("repo"),
                tag,
            });
        }
        tx.commit().await?;
        self.durable().await?;
        Ok(out)
    }

    async fn retention_untagged(
        &self,
        rule: &RetentionRule,
        older_than: i64,
        dry_run: bool,
    ) -> Result<Vec<Retained>> {
        if rule.untagged_days.is_none() {
            return Ok(Vec::new());
        }
        let dead = format!(
            "{REACHABLE} SELECT m.repo_id, r.name AS repo, m.digest FROM manifests m
             JOIN repositories r ON r.id = m.repo_id
             WHERE r.name GLOB ?1 AND m.created_at <= ?2 AND NOT EXISTS
               (SELECT 1 FROM live l WHERE l.repo_id = m.repo_id AND l.digest = m.digest)
             ORDER BY r.name, m.digest"
        );
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(&dead)
            .bind(&rule.repositories)
            .bind(older_than)
            .fetch_all(&mut *tx)
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let digest: String = r.get("digest");
            if !dry_run {
                sqlx::query("DELETE FROM manifests WHERE repo_id = ? AND digest = ?")
                    .bind(r.get::<i64, _>("repo_id"))
                    .bind(&digest)
                    .execute(&mut *tx)
                    .await?;
            }
            out.push(Retained::Manifest {
                repo: r.get("repo"),
                digest,
            });
        }
        tx.commit().await?;
        self.durable().await?;
        Ok(out)
    }

    async fn quota(&self, namespace: &str) -> Result<Option<u64>> {
        let q: Option<i64> = sqlx::query_scalar("SELECT bytes FROM quotas WHERE namespace = ?")
            .bind(namespace)
            .fetch_optional(&self.reader)
            .await?;
        Ok(q.map(|q| q as u64))
    }

    async fn quota_set(&self, namespace: &str, bytes: Option<u64>) -> Result<()> {
        match bytes {
            Some(b) => {
                sqlx::query(
                    "INSERT INTO quotas (namespace, bytes, updated_at) VALUES (?, ?, ?)
                     ON CONFLICT (namespace) DO UPDATE SET bytes = excluded.bytes, updated_at = excluded.updated_at",
                )
                .bind(namespace)
                .bind(i64::try_from(b).unwrap_or(i64::MAX))
                .bind(now_ms())
                .execute(&self.writer)
                .await?;
                self.durable().await?;
            }
            None => {
                sqlx::query("DELETE FROM quotas WHERE namespace = ?")
                    .bind(namespace)
                    .execute(&self.writer)
                    .await?;
                self.durable().await?;
            }
        }
        Ok(())
    }
}
