-- Request ids outlive their contact only as a hash: DeleteContact keeps, for each
-- request id it erases, the id's SHA-256 and method (no personal data), so a retry that
-- arrives after the erasure is refused instead of creating the person again. Both
-- remembered requests and these tombstones expire after `--request-id-retention`.
ALTER TABLE idempotency_keys ADD COLUMN request_hash bytea;

CREATE TABLE erased_requests (
    tenant_id    text        NOT NULL,
    request_hash bytea       NOT NULL,
    method       text        NOT NULL,
    erased_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_hash)
);

-- The purge deletes by age.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
CREATE INDEX erased_requests_erased_at ON erased_requests (erased_at);
