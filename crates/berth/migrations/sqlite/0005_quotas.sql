-- Storage quotas per namespace (the first path component of repository names).
CREATE TABLE quotas (
    namespace  TEXT PRIMARY KEY,
    bytes      INTEGER NOT NULL CHECK (bytes >= 0),
    updated_at INTEGER NOT NULL
);
