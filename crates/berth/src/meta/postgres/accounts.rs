//! Users, teams, memberships, access tokens, the audit log and shared secrets in
//! PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{text, PostgresMetadata};
use crate::meta::accounts::{
    joined_teams, AccessToken, AccountKind, Accounts, AuditEntry, Created, Member, MemberChange,
    Role, Team, User,
};
use crate::meta::{now_ms, Result};

fn user(r: &PgRow) -> User {
    User {
        id: r.get("id"),
        name: r.get("name"),
        is_admin: r.get("is_admin"),
        created_at: r.get("created_at"),
        last_login_at: r.get("last_login_at"),
    }
}

fn token(r: &PgRow) -> AccessToken {
    AccessToken {
        id: r.get("id"),
        user: r.get("user_name"),
        name: r.get("name"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        last_used_at: r.get("last_used_at"),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

const USER_COLUMNS: &str = "id, name, is_admin, created_at, last_login_at";
const TOKEN_SELECT: &str =
    "SELECT t.id, a.name AS user_name, t.name, t.created_at, t.expires_at, t.last_used_at
     FROM access_tokens t JOIN accounts a ON a.id = t.user_id";

impl PostgresMetadata {
    async fn members(&self, team_id: i64) -> Result<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT a.name, m.role FROM memberships m JOIN accounts a ON a.id = m.user_id
             WHERE m.team_id = $1 ORDER BY a.name",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(Member {
                    user: r.get("name"),
                    role: Role::parse(r.get("role"))?,
                })
            })
            .collect())
    }

    async fn account_id(&self, name: &str, kind: AccountKind) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM accounts WHERE name = $1 AND kind = $2")
                .bind(text(name))
                .bind(kind.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

#[async_trait]
impl Accounts for PostgresMetadata {
    async fn user_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE kind = 'user'")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn user_create(
        &self,
        name: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<Created<User>> {
        let r = sqlx::query(&format!(
            "INSERT INTO accounts (name, kind, password_hash, is_admin, created_at)
             VALUES ($1, 'user', $2, $3, $4) RETURNING {USER_COLUMNS}"
        ))
        .bind(text(name))
        .bind(text(password_hash))
        .bind(is_admin)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await;
        match r {
            Ok(row) => Ok(Created::Ok(user(&row))),
            Err(e) if is_unique_violation(&e) => Ok(Created::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM accounts WHERE name = $1 AND kind = 'user'"
        ))
        .bind(text(name))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            (
                user(&r),
                r.get::<Option<String>, _>("password_hash")
                    .unwrap_or_default(),
            )
        }))
    }

    async fn user_by_id(&self, id: i64) -> Result<Option<User>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM accounts WHERE id = $1 AND kind = 'user'"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user))
    }

    async fn user_teams(&self, user_id: i64) -> Result<Vec<(String, Role)>> {
        let rows = sqlx::query(
            "SELECT a.name, m.role FROM memberships m JOIN accounts a ON a.id = m.team_id
             WHERE m.user_id = $1 ORDER BY a.name",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.get("name"), Role::parse(r.get("role"))?)))
            .collect())
    }

    async fn bearer_user(
        &self,
        id: i64,
        name: &str,
        token: Option<i64>,
    ) -> Result<Option<(User, Vec<(String, Role)>)>> {
        // One row per team (one with no team for a user in none), in team order.
        let rows = sqlx::query(
            "SELECT u.id, u.name, u.is_admin, u.created_at, u.last_login_at,
                    t.name AS team, m.role
             FROM accounts u
             LEFT JOIN memberships m ON m.user_id = u.id
             LEFT JOIN accounts t ON t.id = m.team_id
             WHERE u.id = $1 AND u.kind = 'user' AND u.name = $2
               AND ($3::BIGINT IS NULL OR EXISTS (
                   SELECT 1 FROM access_tokens
                   WHERE id = $3::BIGINT AND (expires_at IS NULL OR expires_at > $4)))
             ORDER BY t.name",
        )
        .bind(id)
        .bind(text(name))
        .bind(token)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let teams = joined_teams(rows.iter().map(|r: &PgRow| (r.get("team"), r.get("role"))));
        Ok(Some((user(first), teams)))
    }

    async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM accounts WHERE kind = 'user' ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(user).collect())
    }

    async fn user_set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        let r =
            sqlx::query("UPDATE accounts SET password_hash = $1 WHERE name = $2 AND kind = 'user'")
                .bind(text(password_hash))
                .bind(text(name))
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn user_set_admin(&self, name: &str, is_admin: bool) -> Result<bool> {
        let r = sqlx::query("UPDATE accounts SET is_admin = $1 WHERE name = $2 AND kind = 'user'")
            .bind(is_admin)
            .bind(text(name))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn user_logged_in(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE accounts SET last_login_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn account_delete(&self, name: &str, kind: AccountKind) -> Result<Option<u64>> {
        // As delete_repository: many rows, so not interleaved with the collector's.
        let mut tx = self.shared_tx().await?;
        let r = sqlx::query("DELETE FROM accounts WHERE name = $1 AND kind = $2")
            .bind(text(name))
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        // The namespace: the repository named exactly `name` and everything under
        // `name/`. '0' is the character after '/', so the range is exactly the prefix.
        let repos = sqlx::query(
            "DELETE FROM repositories WHERE name = $1 OR (name >= $1 || '/' AND name < $1 || '0')",
        )
        .bind(text(name))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM uploads WHERE repo = $1 OR (repo >= $1 || '/' AND repo < $1 || '0')",
        )
        .bind(text(name))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM quotas WHERE namespace = $1")
            .bind(text(name))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(repos.rows_affected()))
    }

    async fn team_create(&self, name: &str) -> Result<Created<Team>> {
        let r = sqlx::query(
            "INSERT INTO accounts (name, kind, created_at) VALUES ($1, 'team', $2) RETURNING id, created_at",
        )
        .bind(text(name))
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await;
        match r {
            Ok(row) => Ok(Created::Ok(Team {
                id: row.get("id"),
                name: name.to_string(),
                created_at: row.get("created_at"),
                members: Vec::new(),
            })),
            Err(e) if is_unique_violation(&e) => Ok(Created::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn team(&self, name: &str) -> Result<Option<Team>> {
        let row = sqlx::query(
            "SELECT id, name, created_at FROM accounts WHERE name = $1 AND kind = 'team'",
        )
        .bind(text(name))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.get("id");
        Ok(Some(Team {
            id,
            name: row.get("name"),
            created_at: row.get("created_at"),
            members: self.members(id).await?,
        }))
    }

    async fn teams(&self) -> Result<Vec<Team>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at FROM accounts WHERE kind = 'team' ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get("id");
            out.push(Team {
                id,
                name: row.get("name"),
                created_at: row.get("created_at"),
                members: self.members(id).await?,
            });
        }
        Ok(out)
    }

    async fn team_member_add(&self, team: &str, user: &str, role: Role) -> Result<MemberChange> {
        let Some(team_id) = self.account_id(team, AccountKind::Team).await? else {
            return Ok(MemberChange::NoSuchTeam);
        };
        let Some(user_id) = self.account_id(user, AccountKind::User).await? else {
            return Ok(MemberChange::NoSuchUser);
        };
        sqlx::query(
            "INSERT INTO memberships (team_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(team_id)
        .bind(user_id)
        .bind(role.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(MemberChange::Done)
    }

    async fn team_member_remove(&self, team: &str, user: &str) -> Result<MemberChange> {
        let Some(team_id) = self.account_id(team, AccountKind::Team).await? else {
            return Ok(MemberChange::NoSuchTeam);
        };
        let Some(user_id) = self.account_id(user, AccountKind::User).await? else {
            return Ok(MemberChange::NoSuchUser);
        };
        let r = sqlx::query("DELETE FROM memberships WHERE team_id = $1 AND user_id = $2")
            .bind(team_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(if r.rows_affected() > 0 {
            MemberChange::Done
        } else {
            MemberChange::NoSuchUser
        })
    }

    async fn token_create(
        &self,
        user_id: i64,
        name: &str,
        secret_hash: &str,
        expires_at: Option<i64>,
    ) -> Result<Created<AccessToken>> {
        let r = sqlx::query(
            "INSERT INTO access_tokens (user_id, name, secret_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(user_id)
        .bind(text(name))
        .bind(secret_hash)
        .bind(now_ms())
        .bind(expires_at)
        .fetch_one(&self.pool)
        .await;
        let id: i64 = match r {
            Ok(row) => row.get("id"),
            Err(e) if is_unique_violation(&e) => return Ok(Created::NameTaken),
            Err(e) => return Err(e.into()),
        };
        let row = sqlx::query(&format!("{TOKEN_SELECT} WHERE t.id = $1"))
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(Created::Ok(token(&row)))
    }

    async fn token_use(&self, secret_hash: &str) -> Result<Option<(AccessToken, User)>> {
        let row = sqlx::query(&format!(
            "{TOKEN_SELECT} WHERE t.secret_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)"
        ))
        .bind(secret_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let t = token(&row);
        let Some(u) = self.user_by_name(&t.user).await?.map(|(u, _)| u) else {
            return Ok(None);
        };
        // Recording use is best-effort bookkeeping; a busy database must not fail a pull.
        let _ = sqlx::query("UPDATE access_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(t.id)
            .execute(&self.pool)
            .await;
        Ok(Some((t, u)))
    }

    async fn tokens(&self, user: Option<&str>) -> Result<Vec<AccessToken>> {
        let rows = sqlx::query(&format!(
            "{TOKEN_SELECT} WHERE ($1::TEXT IS NULL OR a.name = $1) ORDER BY a.name, t.name"
        ))
        .bind(user.map(text))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(token).collect())
    }

    async fn token_revoke(&self, user: &str, name: &str) -> Result<bool> {
        let r = sqlx::query(
            "DELETE FROM access_tokens WHERE name = $1
             AND user_id = (SELECT id FROM accounts WHERE name = $2 AND kind = 'user')",
        )
        .bind(text(name))
        .bind(text(user))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn session_create(
        &self,
        id: &str,
        user_id: i64,
        csrf: &str,
        expires_at: i64,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(user_id)
        .bind(text(csrf))
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session_get(&self, id: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT a.id, a.name, a.is_admin, a.created_at, a.last_login_at, s.csrf
             FROM sessions s JOIN accounts a ON a.id = s.user_id
             WHERE s.id = $1 AND s.expires_at > $2 AND a.kind = 'user'",
        )
        .bind(id)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (user(&r), r.get("csrf"))))
    }

    async fn session_delete(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn sessions_delete_user(&self, user: &str, keep: Option<&str>) -> Result<()> {
        sqlx::query(
            "DELETE FROM sessions WHERE user_id = (SELECT id FROM accounts WHERE name = $1 AND kind = 'user')
             AND id IS DISTINCT FROM $2",
        )
        .bind(text(user))
        .bind(keep.map(text))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit(&self, e: AuditEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail, client) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.at)
        .bind(e.actor.as_deref().map(text))
        .bind(text(&e.action))
        .bind(e.target.as_deref().map(text))
        .bind(e.detail.as_deref().map(text))
        .bind(e.client.as_deref().map(text))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, target, detail, client FROM audit_log
             WHERE at < $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                at: r.get("at"),
                actor: r.get("actor"),
                action: r.get("action"),
                target: r.get("target"),
                detail: r.get("detail"),
                client: r.get("client"),
            })
            .collect())
    }

    async fn login_failures(&self, keys: &[&str]) -> Result<Vec<(String, u32, i64)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keys.iter().map(|k| text(k)).collect();
        let rows =
            sqlx::query("SELECT key, failures, last_at FROM login_failures WHERE key = ANY($1)")
                .bind(&keys)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let n: i32 = r.get("failures");
                (r.get("key"), n.max(0) as u32, r.get("last_at"))
            })
            .collect())
    }

    async fn login_failed(&self, keys: &[&str], now: i64, forget_before: i64) -> Result<()> {
        // Rows are locked in key order by one statement, and the clean-up skips rows
        // another sign-in holds, so concurrent failures never deadlock.
        sqlx::query(
            "DELETE FROM login_failures WHERE key IN (
                 SELECT key FROM login_failures WHERE last_at < $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(forget_before)
        .execute(&self.pool)
        .await?;
        let mut keys: Vec<String> = keys.iter().map(|k| text(k)).collect();
        keys.sort();
        keys.dedup();
        sqlx::query(
            "INSERT INTO login_failures (key, failures, last_at)
             SELECT k, 1, $2 FROM unnest($1::text[]) AS k ORDER BY k
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN login_failures.last_at < $3 THEN 1
                                 ELSE login_failures.failures + 1 END,
                 last_at = EXCLUDED.last_at",
        )
        .bind(&keys)
        .bind(now)
        .bind(forget_before)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn login_forget(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(text(key))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn signing_key(&self, candidate: &str) -> Result<String> {
        const STORED: &str = "SELECT value FROM secrets WHERE name = 'token_signing_key'";
        // Read first: every start after the first finds the key, without a write.
        if let Some(pem) = sqlx::query_scalar(STORED)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(pem);
        }
        sqlx::query(
            "INSERT INTO secrets (name, value, created_at) VALUES ('token_signing_key', $1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(candidate)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar(STORED).fetch_one(&self.pool).await?)
    }
}
