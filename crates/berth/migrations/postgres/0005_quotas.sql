-- Storage quotas per namespace (the first path component of repository names).
CREATE TABLE quotas (
    namespace  TEXT COLLATE "C" PRIMARY KEY,
    bytes      BIGINT NOT NULL CHECK (bytes >= 0),
    updated_at BIGINT NOT NULL
);
