-- The same tables as migrations/postgres/0002_activity.sql, in SQLite terms
-- (INTEGER microseconds, TEXT JSON). Rows cascade with their contact.

CREATE TABLE sends (
    tenant_id     TEXT        NOT NULL,
    id            TEXT        NOT NULL,
    contact_id    TEXT        NOT NULL,
    email         TEXT        NOT NULL,
    template_id   TEXT        NOT NULL,
    template_name TEXT        NOT NULL,
    subject       TEXT        NOT NULL,
    status        TEXT        NOT NULL,
    source        TEXT        NOT NULL,
    source_id     TEXT        NOT NULL,
    created_at    INTEGER NOT NULL,
    sent_at       INTEGER,
    delivered_at  INTEGER,
    opened_at     INTEGER,
    clicked_at    INTEGER,
    bounced_at    INTEGER,
    complained_at INTEGER,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
) STRICT;
-- ListContactSends: newest first; ids are ULIDs, so id order is creation order.
CREATE INDEX sends_by_contact ON sends (tenant_id, contact_id, id);

CREATE TABLE scheduled_sends (
    tenant_id     TEXT        NOT NULL,
    id            TEXT        NOT NULL,
    contact_id    TEXT        NOT NULL,
    email         TEXT        NOT NULL,
    template_id   TEXT        NOT NULL,
    template_name TEXT        NOT NULL,
    subject       TEXT        NOT NULL,
    scheduled_for INTEGER NOT NULL,
    source        TEXT        NOT NULL,
    source_id     TEXT        NOT NULL,
    step          INTEGER     NOT NULL,
    status        TEXT        NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX scheduled_sends_pending ON scheduled_sends (tenant_id, contact_id, scheduled_for, id)
    WHERE status = 'pending';

CREATE TABLE sequence_enrolments (
    tenant_id     TEXT        NOT NULL,
    contact_id    TEXT        NOT NULL,
    sequence_id   TEXT        NOT NULL,
    sequence_name TEXT        NOT NULL,
    status        TEXT        NOT NULL,
    current_step  INTEGER     NOT NULL,
    enrolled_at   INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    completed_at  INTEGER,
    exited_at     INTEGER,
    PRIMARY KEY (tenant_id, contact_id, sequence_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
) STRICT;

CREATE TABLE segment_memberships (
    tenant_id    TEXT        NOT NULL,
    contact_id   TEXT        NOT NULL,
    segment_id   TEXT        NOT NULL,
    segment_name TEXT        NOT NULL,
    joined_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, segment_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- AIP-155 request ids. The response is kept so a retry returns the first result; it
-- names the contact, so it is erased with the contact.
CREATE TABLE idempotency_keys (
    tenant_id   TEXT        NOT NULL,
    request_id  TEXT        NOT NULL,
    method      TEXT        NOT NULL,
    fingerprint BLOB       NOT NULL,
    contact_id  TEXT,
    response    TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, request_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
) STRICT;
