-- The same model as migrations/postgres, in SQLite's terms: timestamps are INTEGER
-- microseconds since the Unix epoch, JSON is TEXT, booleans are 0/1.

CREATE TABLE tenants (
    tenant_id  TEXT    PRIMARY KEY,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    key_id     TEXT    PRIMARY KEY,
    tenant_id  TEXT    NOT NULL REFERENCES tenants (tenant_id),
    key_hash   BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE TABLE contacts (
    -- Explicit rowid alias: the FTS index refers to it, and VACUUM must not renumber it.
    rid          INTEGER PRIMARY KEY,
    tenant_id    TEXT    NOT NULL REFERENCES tenants (tenant_id),
    id           TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    email_key    TEXT    NOT NULL,
    properties   TEXT    NOT NULL DEFAULT '{}',
    search_text  TEXT    NOT NULL,
    suppressed   INTEGER NOT NULL DEFAULT 0,
    unsubscribed INTEGER NOT NULL DEFAULT 0,
    revision     INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX contacts_tenant_email_key ON contacts (tenant_id, email_key);
CREATE INDEX contacts_tenant_suppressed ON contacts (tenant_id, id) WHERE suppressed = 1;

-- Substring search: an FTS5 trigram index over search_text, kept in step with
-- contacts by triggers, so in the same transaction as every write.
CREATE VIRTUAL TABLE contacts_fts USING fts5 (
    search_text,
    content = 'contacts',
    content_rowid = 'rid',
    tokenize = 'trigram'
);

CREATE TRIGGER contacts_fts_insert AFTER INSERT ON contacts BEGIN
    INSERT INTO contacts_fts (rowid, search_text) VALUES (new.rid, new.search_text);
END;

CREATE TRIGGER contacts_fts_delete AFTER DELETE ON contacts BEGIN
    INSERT INTO contacts_fts (contacts_fts, rowid, search_text) VALUES ('delete', old.rid, old.search_text);
END;

CREATE TRIGGER contacts_fts_update AFTER UPDATE OF search_text ON contacts BEGIN
    INSERT INTO contacts_fts (contacts_fts, rowid, search_text) VALUES ('delete', old.rid, old.search_text);
    INSERT INTO contacts_fts (rowid, search_text) VALUES (new.rid, new.search_text);
END;

CREATE TABLE timeline_entries (
    tenant_id   TEXT    NOT NULL,
    contact_id  TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    occurred_at INTEGER NOT NULL,
    data        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
) STRICT;

CREATE INDEX timeline_entries_by_time ON timeline_entries (tenant_id, contact_id, occurred_at, id);
