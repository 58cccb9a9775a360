-- Who opened each upload session (`user:NAME`, or `ip:ADDRESS` without an account),
-- so that limits.uploads_per_user can be enforced.
ALTER TABLE uploads ADD COLUMN owner TEXT;
CREATE INDEX uploads_owner ON uploads(owner);
