-- Secrets of the deployment, made once here and shared by every replica of the
-- service on this database: `cursor` signs page cursors (HMAC-SHA-256), so a caller
-- cannot forge one and a cursor from one replica resumes on any. 32 bytes from two
-- version-4 UUIDs (PostgreSQL's strong random source), no extension needed.
CREATE TABLE deployment_secrets (
    name   text  PRIMARY KEY,
    secret bytea NOT NULL CHECK (octet_length(secret) = 32)
);

INSERT INTO deployment_secrets (name, secret)
VALUES ('cursor', uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
