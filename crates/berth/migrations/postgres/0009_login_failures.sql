-- Failed sign-ins, counted per key (`user:<name>`, `ip:<address>`) so that every process
-- on this database throttles the same attempts (auth/throttle.rs). Rows whose last
-- failure is an hour old are dropped as new failures are recorded.
CREATE TABLE login_failures (
    key      TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_at  BIGINT NOT NULL
);
CREATE INDEX login_failures_last_at ON login_failures(last_at);
