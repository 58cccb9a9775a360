//! Repositories, blobs, manifests, tags and upload sessions in SQLite.

use std::str::FromStr;

use anyhow::Context;
use async_trait::async_trait;
use oci::{Digest, RepoName, Tag};
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::SqliteMetadata;
use crate::meta::{
    now_ms, Linked, ManifestRow, Metadata, NewManifest, Page, Presence, PutManifest, Referrer,
    RepoSummary, Result, TagDetail, TagFilter, TagPage,
};

async fn repo_id_or_create(conn: &mut SqliteConnection, repo: &RepoName) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO repositories (name, created_at) VALUES (?, ?)
         ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
    )
    .bind(repo.as_str())
    .bind(now_ms())
    .fetch_one(conn)
    .await?)
}

fn digest(s: String) -> Result<Digest> {
    Digest::from_str(&s).with_context(|| format!("corrupt digest {s:?} in metadata"))
}

fn manifest_row(r: sqlx::sqlite::SqliteRow) -> Result<ManifestRow> {
    Ok(ManifestRow {
        digest: digest(r.get("digest"))?,
        media_type: r.get("media_type"),
        size: r.get::<i64, _>("size") as u64,
    })
}

#[async_trait]
impl Metadata for SqliteMetadata {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        present: Presence<'_>,
        upload: Option<Uuid>,
    ) -> Result<Linked> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let repo_id = repo_id_or_create(&mut tx, repo).await?;
        let now = now_ms();
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT (digest) DO NOTHING")
            .bind(digest.to_string())
            .bind(size as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO repo_blobs (repo_id, digest, created_at) VALUES (?, ?, ?)
             ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // The inserts hold the write lock: garbage collection can't delete the file
        // between this check and the commit.
        if !present.await? {
            return Ok(Linked::Vanished);
        }
        if let Some(id) = upload {
            sqlx::query("DELETE FROM uploads WHERE id = ?")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.durable().await?;
        Ok(Linked::Linked)
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repo_blobs rb
             JOIN repositories r ON r.id = rb.repo_id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = ? AND rb.digest = ?",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.reader)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn repos_with_blob(&self, digest: &Digest) -> Result<Vec<RepoName>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT r.name FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id
             WHERE rb.digest = ? ORDER BY r.name",
        )
        .bind(digest.to_string())
        .fetch_all(&self.reader)
        .await?;
        names
            .into_iter()
            .map(|n| {
                n.parse()
                    .with_context(|| format!("corrupt repository name {n:?}"))
            })
            .collect()
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let r = sqlx::query(
            "DELETE FROM repo_blobs WHERE digest = ?
             AND repo_id = (SELECT id FROM repositories WHERE name = ?)",
        )
        .bind(digest.to_string())
        .bind(repo.as_str())
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn upload_create(&self, id: Uuid, repo: &RepoName, owner: &str) -> Result<()> {
        sqlx::query("INSERT INTO uploads (id, repo, created_at, owner) VALUES (?, ?, ?, ?)")
            .bind(id.to_string())
            .bind(repo.as_str())
            .bind(now_ms())
            .bind(owner)
            .execute(&self.writer)
            .await?;
        // Not waited to be synced (see the module doc of `sqlite`): the next write's
        // sync covers it, and a session lost with the machine's power is reported
        // unknown to its client, which starts a new one.
        Ok(())
    }

    async fn uploads_open(&self, owner: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM uploads WHERE owner = ?")
            .bind(owner)
            .fetch_one(&self.reader)
            .await?;
        Ok(n as u64)
    }

    async fn upload_repo(&self, id: Uuid) -> Result<Option<RepoName>> {
        let name: Option<String> = sqlx::query_scalar("SELECT repo FROM uploads WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        name.map(|n| {
            n.parse()
                .with_context(|| format!("corrupt repository name {n:?}"))
        })
        .transpose()
    }

    async fn upload_delete(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        self.durable().await?;
        Ok(())
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest<'_>,
        tag: Option<&Tag>,
        present: Presence<'_>,
    ) -> Result<PutManifest> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let repo_id = repo_id_or_create(&mut tx, repo).await?;
        for d in &m.blobs {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM repo_blobs WHERE repo_id = ? AND digest = ?")
                    .bind(repo_id)
                    .bind(d.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if found.is_none() {
                return Ok(PutManifest::MissingReference((*d).clone()));
            }
        }
        for d in &m.children {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ?")
                    .bind(repo_id)
                    .bind(d.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if found.is_none() {
                return Ok(PutManifest::MissingReference((*d).clone()));
            }
        }
        let now = now_ms();
        let digest = m.digest.to_string();
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT (digest) DO NOTHING")
            .bind(&digest)
            .bind(m.size as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, annotations, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repo_id)
        .bind(&digest)
        .bind(m.media_type)
        .bind(m.size as i64)
        .bind(m.artifact_type)
        .bind(m.subject.map(|s| s.to_string()))
        .bind(m.annotations.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let refs = m
            .blobs
            .iter()
            .map(|d| (d, 0))
            .chain(m.children.iter().map(|d| (d, 1)));
        for (child, kind) in refs {
            sqlx::query(
                "INSERT INTO manifest_refs (repo_id, manifest, child, kind) VALUES (?, ?, ?, ?)
                 ON CONFLICT DO NOTHING",
            )
            .bind(repo_id)
            .bind(&digest)
            .bind(child.to_string())
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(tag) = tag {
            sqlx::query(
                "INSERT INTO tags (repo_id, name, digest, updated_at, pushed_by) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest,
                     updated_at = excluded.updated_at, pushed_by = excluded.pushed_by",
            )
            .bind(repo_id)
            .bind(tag.as_str())
            .bind(&digest)
            .bind(now)
            .bind(m.pushed_by)
            .execute(&mut *tx)
            .await?;
        }
        if !present.await? {
            return Ok(PutManifest::Vanished);
        }
        tx.commit().await?;
        self.durable().await?;
        Ok(PutManifest::Stored)
    }

    async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<ManifestRow>> {
        sqlx::query(
            "SELECT m.digest, m.media_type, m.size FROM tags t
             JOIN repositories r ON r.id = t.repo_id
             JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
             WHERE r.name = ? AND t.name = ?",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.reader)
        .await?
        .map(manifest_row)
        .transpose()
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>> {
        sqlx::query(
            "SELECT m.digest, m.media_type, m.size FROM manifests m
             JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = ? AND m.digest = ?",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.reader)
        .await?
        .map(manifest_row)
        .transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        // Tags and references go with it (ON DELETE CASCADE).
        let r = sqlx::query(
            "DELETE FROM manifests WHERE digest = ?
             AND repo_id = (SELECT id FROM repositories WHERE name = ?)",
        )
        .bind(digest.to_string())
        .bind(repo.as_str())
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let r = sqlx::query(
            "DELETE FROM tags WHERE name = ?
             AND repo_id = (SELECT id FROM repositories WHERE name = ?)",
        )
        .bind(tag.as_str())
        .bind(repo.as_str())
        .execute(&self.writer)
        .await?;
        self.durable().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn tags(&self, repo: &RepoName, last: Option<&str>, n: u32) -> Result<Option<Page>> {
        let repo_id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?")
            .bind(repo.as_str())
            .fetch_optional(&self.reader)
            .await?;
        let Some(repo_id) = repo_id else {
            return Ok(None);
        };
        let items: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM tags WHERE repo_id = ? AND name > ? ORDER BY name LIMIT ?",
        )
        .bind(repo_id)
        .bind(last.unwrap_or(""))
        .bind(n as i64 + 1)
        .fetch_all(&self.reader)
        .await?;
        Ok(Some(page(items, n)))
    }

    async fn catalog(
        &self,
        namespaces: Option<&[String]>,
        last: Option<&str>,
        n: u32,
    ) -> Result<Page> {
        let (filter, binds) = namespace_filter(namespaces);
        if binds.is_none() {
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        }
        let sql = format!(
            "SELECT name FROM repositories WHERE name > ? AND ({filter}) ORDER BY name LIMIT ?"
        );
        let mut q = sqlx::query_scalar(&sql).bind(last.unwrap_or(""));
        for ns in binds.unwrap_or_default() {
            q = q.bind(ns).bind(ns).bind(ns);
        }
        let items: Vec<String> = q.bind(n as i64 + 1).fetch_all(&self.reader).await?;
        Ok(page(items, n))
    }

    async fn repositories(
        &self,
        namespaces: Option<&[String]>,
        contains: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> Result<(Vec<RepoSummary>, bool)> {
        let (filter, binds) = namespace_filter(namespaces);
        if binds.is_none() {
            return Ok((Vec::new(), false));
        }
        let sql = format!(
            "SELECT r.name, r.created_at,
                    (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id) AS tags,
                    (SELECT COUNT(*) FROM manifests m WHERE m.repo_id = r.id) AS manifests,
                    (SELECT MAX(updated_at) FROM tags t WHERE t.repo_id = r.id) AS updated_at
             FROM repositories r
             WHERE r.name > ? AND (? IS NULL OR instr(r.name, ?) > 0) AND ({filter})
             ORDER BY r.name LIMIT ?"
        );
        let mut q = sqlx::query(&sql)
            .bind(last.unwrap_or(""))
            .bind(contains)
            .bind(contains);
        for ns in binds.unwrap_or_default() {
            q = q.bind(ns).bind(ns).bind(ns);
        }
        let rows = q.bind(n as i64 + 1).fetch_all(&self.reader).await?;
        let more = rows.len() > n as usize;
        let items = rows
            .iter()
            .take(n as usize)
            .map(|r| RepoSummary {
                name: r.get("name"),
                tags: r.get::<i64, _>("tags") as u64,
                manifests: r.get::<i64, _>("manifests") as u64,
                created_at: r.get("created_at"),
                updated_at: r.get("updated_at"),
            })
            .collect();
        Ok((items, more))
    }

    async fn tag_details(&self, repo: &RepoName, filter: TagFilter<'_>) -> Result<Option<TagPage>> {
        let repo_id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?")
            .bind(repo.as_str())
            .fetch_optional(&self.reader)
            .await?;
        let Some(repo_id) = repo_id else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT t.name, t.digest, t.updated_at, t.pushed_by, m.media_type,
                    m.size + COALESCE((SELECT SUM(b.size) FROM manifest_refs mr
                                       JOIN blobs b ON b.digest = mr.child
                                       WHERE mr.repo_id = m.repo_id AND mr.manifest = m.digest
                                         AND mr.kind = 0), 0)
                    -- an index: its child manifests with their blobs
                    + COALESCE((SELECT SUM(cm.size) FROM manifest_refs c
                                JOIN manifests cm ON cm.repo_id = c.repo_id AND cm.digest = c.child
                                WHERE c.repo_id = m.repo_id AND c.manifest = m.digest
                                  AND c.kind = 1), 0)
                    + COALESCE((SELECT SUM(b.size) FROM manifest_refs c
                                JOIN manifest_refs mr ON mr.repo_id = c.repo_id
                                     AND mr.manifest = c.child AND mr.kind = 0
                                JOIN blobs b ON b.digest = mr.child
                                WHERE c.repo_id = m.repo_id AND c.manifest = m.digest
                                  AND c.kind = 1), 0) AS size
             FROM tags t JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
             WHERE t.repo_id = ?1 AND (?2 IS NULL OR t.name > ?2) AND (?3 IS NULL OR t.digest = ?3)
             ORDER BY t.name LIMIT ?4",
        )
        .bind(repo_id)
        .bind(filter.last)
        .bind(filter.digest)
        .bind(i64::from(filter.n))
        .fetch_all(&self.reader)
        .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tags WHERE repo_id = ?1 AND (?2 IS NULL OR digest = ?2)",
        )
        .bind(repo_id)
        .bind(filter.digest)
        .fetch_one(&self.reader)
        .await?;
        Ok(Some(TagPage {
            total: total as u64,
            tags: rows
                .iter()
                .map(|r| TagDetail {
                    name: r.get("name"),
                    digest: r.get("digest"),
                    media_type: r.get("media_type"),
                    size: r.get::<i64, _>("size") as u64,
                    updated_at: r.get("updated_at"),
                    pushed_by: r.get("pushed_by"),
                })
                .collect(),
        }))
    }

    async fn delete_repository(&self, repo: &RepoName) -> Result<bool> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let r = sqlx::query("DELETE FROM repositories WHERE name = ?")
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM uploads WHERE repo = ?")
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.durable().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m
             JOIN repositories r ON r.id = m.repo_id
             WHERE r.name = ? AND m.subject = ? AND (? IS NULL OR m.artifact_type = ?)
             ORDER BY m.created_at, m.digest",
        )
        .bind(repo.as_str())
        .bind(subject.to_string())
        .bind(artifact_type)
        .bind(artifact_type)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Referrer {
                    digest: digest(r.get("digest"))?,
                    media_type: r.get("media_type"),
                    size: r.get::<i64, _>("size") as u64,
                    artifact_type: r.get("artifact_type"),
                    annotations: r.get("annotations"),
                })
            })
            .collect()
    }
}

/// SQL restricting `name` to some namespaces: each is the repository of that name plus
/// the range of names under `ns/` ('0' follows '/'), so it is an index range scan
/// whatever the registry's size. `None` binds: no namespace at all (nothing matches).
fn namespace_filter(namespaces: Option<&[String]>) -> (String, Option<&[String]>) {
    match namespaces {
        None => ("1".to_string(), Some(&[])),
        Some([]) => ("0".to_string(), None),
        Some(ns) => (
            vec!["(name = ? OR (name >= ? || '/' AND name < ? || '0'))"; ns.len()].join(" OR "),
            Some(ns),
        ),
    }
}

fn page(mut items: Vec<String>, n: u32) -> Page {
    let more = items.len() > n as usize;
    items.truncate(n as usize);
    Page { items, more }
}
