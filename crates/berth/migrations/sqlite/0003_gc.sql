-- Garbage collection: one collector at a time (a lease any process can take when it
-- has expired), the history of runs, and tombstones of blobs whose rows are gone and
-- whose files are being deleted.

CREATE TABLE gc_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE gc_runs (
    id                INTEGER PRIMARY KEY,
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    trigger           TEXT NOT NULL,          -- schedule, cli, api
    dry_run           INTEGER NOT NULL,
    grace_ms          INTEGER NOT NULL,
    manifests_deleted INTEGER NOT NULL DEFAULT 0,
    blobs_deleted     INTEGER NOT NULL DEFAULT 0,
    bytes_freed       INTEGER NOT NULL DEFAULT 0,
    uploads_expired   INTEGER NOT NULL DEFAULT 0,
    error             TEXT
);

CREATE TABLE gc_tombstones (
    digest     TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX blobs_created ON blobs(created_at);
CREATE INDEX uploads_created ON uploads(created_at);
