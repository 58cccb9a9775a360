-- Secrets every replica must share, one row each: `token_signing_key` is the Ed25519
-- PKCS#8 PEM that signs bearer tokens (a token issued by one replica verifies on all).
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
