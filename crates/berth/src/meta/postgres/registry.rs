//! Repositories, blobs, manifests, tags and upload sessions in PostgreSQL.

use std::str::FromStr;

use anyhow::Context;
use async_trait::async_trait;
use oci::{Digest, RepoName, Tag};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{before_nul, text, PostgresMetadata};
use crate::meta::{
    now_ms, Linked, ManifestRow, Metadata, NewManifest, Page, Presence, PutManifest, Referrer,
    RepoSummary, Result, TagDetail, TagFilter, TagPage,
};

/// The repository's id, creating it if needed. Not an upsert: `DO UPDATE` would lock
/// the row exclusively and queue every push to the repository behind the first. A key
/// share lock instead: pushes share it, and a `delete_repository` waits for them (and
/// they for it) rather than failing a foreign key half-way.
async fn repo_id_or_create(conn: &mut PgConnection, repo: &RepoName) -> Result<i64> {
    loop {
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(repo.as_str())
        .bind(now_ms())
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = inserted {
            return Ok(id);
        }
        // A new statement, a new snapshot: sees the row another replica just committed
        // (unless it was deleted meanwhile: then insert again).
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1 FOR KEY SHARE")
                .bind(repo.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(id) = found {
            return Ok(id);
        }
    }
}

fn digest(s: String) -> Result<Digest> {
    Digest::from_str(&s).with_context(|| format!("corrupt digest {s:?} in metadata"))
}

fn manifest_row(r: sqlx::postgres::PgRow) -> Result<ManifestRow> {
    Ok(ManifestRow {
        digest: digest(r.get("digest"))?,
        media_type: r.get("media_type"),
        size: r.get::<i64, _>("size") as u64,
    })
}

#[async_trait]
impl Metadata for PostgresMetadata {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
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
        let mut tx = self.shared_tx().await?;
        let repo_id = repo_id_or_create(&mut tx, repo).await?;
        let now = now_ms();
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING")
            .bind(digest.to_string())
            .bind(size as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO repo_blobs (repo_id, digest, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // The shared collector lock is held: no collector transaction can delete the
        // file between this check and the commit.
        if !present.await? {
            return Ok(Linked::Vanished);
        }
        if let Some(id) = upload {
            sqlx::query("DELETE FROM uploads WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Linked::Linked)
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repo_blobs rb
             JOIN repositories r ON r.id = rb.repo_id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn repos_with_blob(&self, digest: &Digest) -> Result<Vec<RepoName>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT r.name FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id
             WHERE rb.digest = $1 ORDER BY r.name",
        )
        .bind(digest.to_string())
        .fetch_all(&self.pool)
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
            "DELETE FROM repo_blobs WHERE digest = $1
             AND repo_id = (SELECT id FROM repositories WHERE name = $2)",
        )
        .bind(digest.to_string())
        .bind(repo.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn upload_create(&self, id: Uuid, repo: &RepoName, owner: &str) -> Result<()> {
        sqlx::query("INSERT INTO uploads (id, repo, created_at, owner) VALUES ($1, $2, $3, $4)")
            .bind(id.to_string())
            .bind(repo.as_str())
            .bind(now_ms())
            .bind(text(owner))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn uploads_open(&self, owner: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM uploads WHERE owner = $1")
            .bind(text(owner))
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn upload_repo(&self, id: Uuid) -> Result<Option<RepoName>> {
        let name: Option<String> = sqlx::query_scalar("SELECT repo FROM uploads WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        name.map(|n| {
            n.parse()
                .with_context(|| format!("corrupt repository name {n:?}"))
        })
        .transpose()
    }

    async fn upload_delete(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest<'_>,
        tag: Option<&Tag>,
        present: Presence<'_>,
    ) -> Result<PutManifest> {
        // The shared collector lock: the references checked here can't be collected
        // before this commits.
        let mut tx = self.shared_tx().await?;
        let repo_id = repo_id_or_create(&mut tx, repo).await?;
        for d in &m.blobs {
            let found: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM repo_blobs WHERE repo_id = $1 AND digest = $2")
                    .bind(repo_id)
                    .bind(d.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if found.is_none() {
                return Ok(PutManifest::MissingReference((*d).clone()));
            }
        }
        for d in &m.children {
            let found: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2")
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
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING")
            .bind(&digest)
            .bind(m.size as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, annotations, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repo_id)
        .bind(&digest)
        .bind(text(m.media_type))
        .bind(m.size as i64)
        .bind(m.artifact_type.map(text))
        .bind(m.subject.map(|s| s.to_string()))
        .bind(m.annotations.as_deref().map(text))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let refs = m
            .blobs
            .iter()
            .map(|d| (d, 0_i64))
            .chain(m.children.iter().map(|d| (d, 1_i64)));
        for (child, kind) in refs {
            sqlx::query(
                "INSERT INTO manifest_refs (repo_id, manifest, child, kind) VALUES ($1, $2, $3, $4)
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
                "INSERT INTO tags (repo_id, name, digest, updated_at, pushed_by) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest,
                     updated_at = excluded.updated_at, pushed_by = excluded.pushed_by",
            )
            .bind(repo_id)
            .bind(tag.as_str())
            .bind(&digest)
            .bind(now)
            .bind(m.pushed_by.map(text))
            .execute(&mut *tx)
            .await?;
        }
        if !present.await? {
            return Ok(PutManifest::Vanished);
        }
        tx.commit().await?;
        Ok(PutManifest::Stored)
    }

    async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<ManifestRow>> {
        sqlx::query(
            "SELECT m.digest, m.media_type, m.size FROM tags t
             JOIN repositories r ON r.id = t.repo_id
             JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
             WHERE r.name = $1 AND t.name = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.pool)
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
             WHERE r.name = $1 AND m.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(manifest_row)
        .transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        // Tags and references go with it (ON DELETE CASCADE).
        let r = sqlx::query(
            "DELETE FROM manifests WHERE digest = $1
             AND repo_id = (SELECT id FROM repositories WHERE name = $2)",
        )
        .bind(digest.to_string())
        .bind(repo.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let r = sqlx::query(
            "DELETE FROM tags WHERE name = $1
             AND repo_id = (SELECT id FROM repositories WHERE name = $2)",
        )
        .bind(tag.as_str())
        .bind(repo.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn tags(&self, repo: &RepoName, last: Option<&str>, n: u32) -> Result<Option<Page>> {
        let repo_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
                .bind(repo.as_str())
                .fetch_optional(&self.pool)
                .await?;
        let Some(repo_id) = repo_id else {
            return Ok(None);
        };
        let items: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM tags WHERE repo_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(repo_id)
        .bind(before_nul(last.unwrap_or("")))
        .bind(n as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(page(items, n)))
    }

    async fn catalog(
        &self,
        namespaces: Option<&[String]>,
        last: Option<&str>,
        n: u32,
    ) -> Result<Page> {
        if namespaces.is_some_and(|ns| ns.is_empty()) {
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        }
        let items: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT name FROM repositories WHERE name > $1 AND ({}) ORDER BY name LIMIT $2",
            namespace_filter("name", "$3")
        ))
        .bind(before_nul(last.unwrap_or("")))
        .bind(n as i64 + 1)
        .bind(namespaces)
        .fetch_all(&self.pool)
        .await?;
        Ok(page(items, n))
    }

    async fn repositories(
        &self,
        namespaces: Option<&[String]>,
        contains: Option<&str>,
        last: Option<&str>,
        n: u32,
    ) -> Result<(Vec<RepoSummary>, bool)> {
        if namespaces.is_some_and(|ns| ns.is_empty()) {
            return Ok((Vec::new(), false));
        }
        let sql = format!(
            "SELECT r.name, r.created_at,
                    (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id) AS tags,
                    (SELECT COUNT(*) FROM manifests m WHERE m.repo_id = r.id) AS manifests,
                    (SELECT MAX(updated_at) FROM tags t WHERE t.repo_id = r.id) AS updated_at
             FROM repositories r
             WHERE r.name > $1 AND ($2::TEXT IS NULL OR strpos(r.name, $2) > 0) AND ({})
             ORDER BY r.name LIMIT $3",
            namespace_filter("r.name", "$4")
        );
        let rows = sqlx::query(&sql)
            .bind(before_nul(last.unwrap_or("")))
            .bind(contains.map(text))
            .bind(n as i64 + 1)
            .bind(namespaces)
            .fetch_all(&self.pool)
            .await?;
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
        let repo_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
                .bind(repo.as_str())
                .fetch_optional(&self.pool)
                .await?;
        let Some(repo_id) = repo_id else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT t.name, t.digest, t.updated_at, t.pushed_by, m.media_type,
                    (m.size + COALESCE((SELECT SUM(b.size) FROM manifest_refs mr
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
                                  AND c.kind = 1), 0))::BIGINT AS size
             FROM tags t JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
             WHERE t.repo_id = $1 AND ($2::TEXT IS NULL OR t.name > $2)
               AND ($3::TEXT IS NULL OR t.digest = $3)
             ORDER BY t.name LIMIT $4",
        )
        .bind(repo_id)
        .bind(filter.last.map(before_nul))
        .bind(filter.digest.map(text))
        .bind(i64::from(filter.n))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tags WHERE repo_id = $1 AND ($2::TEXT IS NULL OR digest = $2)",
        )
        .bind(repo_id)
        .bind(filter.digest.map(text))
        .fetch_one(&self.pool)
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
        // Deletes many rows: sharing the collector lock keeps it from deadlocking with
        // a collector transaction deleting some of them in another order.
        let mut tx = self.shared_tx().await?;
        let r = sqlx::query("DELETE FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM uploads WHERE repo = $1")
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
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
             WHERE r.name = $1 AND m.subject = $2 AND ($3::TEXT IS NULL OR m.artifact_type = $3)
             ORDER BY m.created_at, m.digest",
        )
        .bind(repo.as_str())
        .bind(subject.to_string())
        .bind(artifact_type.map(text))
        .fetch_all(&self.pool)
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

/// SQL restricting `col` to the namespaces in the text array `param` (NULL: all): each
/// is the repository of that name plus the range of names under `ns/` ('0' follows
/// '/'), so it is an index range scan whatever the registry's size.
pub(super) fn namespace_filter(col: &str, param: &str) -> String {
    format!(
        "{param}::TEXT[] IS NULL OR EXISTS (SELECT 1 FROM unnest({param}::TEXT[]) AS ns(n)
           WHERE {col} = ns.n OR ({col} >= ns.n || '/' AND {col} < ns.n || '0'))"
    )
}

fn page(mut items: Vec<String>, n: u32) -> Page {
    let more = items.len() > n as usize;
    items.truncate(n as usize);
    Page { items, more }
}
