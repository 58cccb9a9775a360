-- Secrets every process must share, one row each: `token_signing_key` is the Ed25519
-- PKCS#8 PEM that signs bearer tokens (moved here from the data directory's
-- token-signing-key.pem, which is imported once if present).
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
