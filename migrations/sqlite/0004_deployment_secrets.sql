-- Secrets of the deployment, made once here: `cursor` signs page cursors
-- (HMAC-SHA-256), so a caller cannot forge one.
CREATE TABLE deployment_secrets (
    name   TEXT PRIMARY KEY,
    secret BLOB NOT NULL CHECK (length(secret) = 32)
) STRICT;

INSERT INTO deployment_secrets (name, secret) VALUES ('cursor', randomblob(32));
