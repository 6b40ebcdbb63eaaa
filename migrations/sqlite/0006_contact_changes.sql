-- The change feed's outbox (WatchContacts), as migrations/postgres. SQLite has one
-- writer at a time, so the AUTOINCREMENT key is assigned in commit order and never
-- reused (not even after the newest rows are purged): it is the position.
CREATE TABLE contact_changes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    contact_id     TEXT    NOT NULL,
    changed_fields TEXT,
    occurred_at    INTEGER NOT NULL,
    email          TEXT,
    properties     TEXT,
    suppressed     INTEGER,
    unsubscribed   INTEGER,
    created_at     INTEGER,
    updated_at     INTEGER,
    revision       INTEGER,
    recorded_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX contact_changes_by_tenant ON contact_changes (tenant_id, seq);
CREATE INDEX contact_changes_by_contact ON contact_changes (tenant_id, contact_id);
CREATE INDEX contact_changes_by_age ON contact_changes (recorded_at);

CREATE TABLE contact_change_watermarks (
    tenant_id TEXT    PRIMARY KEY,
    seq       INTEGER NOT NULL
) STRICT;
