-- Web UI sessions, and who pushed each tag.

-- A signed-in browser. Only a SHA-256 of the cookie's secret is kept, so the table
-- leaking does not hand out sessions. The CSRF token is per session.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,             -- hex SHA-256 of the cookie value
    user_id    BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expires ON sessions(expires_at);

-- The account that last moved the tag (NULL: unknown, or authentication off).
ALTER TABLE tags ADD COLUMN pushed_by TEXT;
