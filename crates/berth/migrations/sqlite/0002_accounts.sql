-- Users and teams share one table so that a name is either a user or a team, never
-- both: each name is a namespace.
CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL CHECK (kind IN ('user', 'team')),
    password_hash TEXT,                       -- argon2id PHC string; users only
    is_admin      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER
);

-- role: what a member may do in the team's namespace ('member' = pull, push, delete).
CREATE TABLE memberships (
    team_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role       TEXT NOT NULL DEFAULT 'member',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);

-- Access tokens for CI and robots: only a SHA-256 of the secret is kept.
CREATE TABLE access_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    UNIQUE (user_id, name)
);

CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    actor    TEXT,                            -- account name, or NULL for anonymous
    action   TEXT NOT NULL,                   -- login, login_failed, push, delete, user_add, …
    target   TEXT,
    detail   TEXT,
    client   TEXT                             -- client address
);
CREATE INDEX audit_log_at ON audit_log(at);
