-- Retention rules, evaluated by the garbage collector. `repositories` and `tags` are
-- glob patterns (`*` any run of characters, `/` included; `?` one character).
CREATE TABLE retention_rules (
    id            INTEGER PRIMARY KEY,
    repositories  TEXT NOT NULL,
    tags          TEXT NOT NULL DEFAULT '*',
    keep_tags     INTEGER CHECK (keep_tags >= 0),      -- keep the newest N matching tags
    untagged_days INTEGER CHECK (untagged_days >= 0),  -- delete untagged manifests older
    created_at    INTEGER NOT NULL
);

ALTER TABLE gc_runs ADD COLUMN tags_deleted INTEGER NOT NULL DEFAULT 0;
