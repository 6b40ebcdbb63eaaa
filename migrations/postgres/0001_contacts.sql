-- Every table and key leads with tenant_id, so the schema can be distributed by
-- tenant (Citus) unchanged. `tenants` and `api_keys` are small reference tables:
-- a key is looked up by its hash before the tenant is known.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE tenants (
    tenant_id  text        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id     text        PRIMARY KEY,
    tenant_id  text        NOT NULL REFERENCES tenants (tenant_id),
    key_hash   bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE contacts (
    tenant_id    text        NOT NULL REFERENCES tenants (tenant_id),
    id           text        NOT NULL,
    email        text        NOT NULL,
    -- Lowercased email: uniqueness and lookups ignore case.
    email_key    text        NOT NULL,
    properties   jsonb       NOT NULL DEFAULT '{}',
    -- Lowercased email and property values, computed by the service (see domain::search_text).
    search_text  text        NOT NULL,
    suppressed   boolean     NOT NULL DEFAULT false,
    unsubscribed boolean     NOT NULL DEFAULT false,
    -- Bumped by every change; room for etags and a change feed.
    revision     bigint      NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX contacts_tenant_email_key ON contacts (tenant_id, email_key);
-- Substring search: trigram GIN, with the tenant inside the index (btree_gin).
CREATE INDEX contacts_tenant_search ON contacts USING gin (tenant_id, search_text gin_trgm_ops);
-- Suppressed contacts are few; a partial index serves `suppressed = true`.
CREATE INDEX contacts_tenant_suppressed ON contacts (tenant_id, id) WHERE suppressed;

CREATE TABLE timeline_entries (
    tenant_id   text        NOT NULL,
    contact_id  text        NOT NULL,
    id          text        NOT NULL,
    type        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    data        jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX timeline_entries_by_time ON timeline_entries (tenant_id, contact_id, occurred_at, id);
