-- Activity written by the platform's other services. Every row hangs off its contact
-- with ON DELETE CASCADE, so erasing a contact erases everything about it in one
-- statement.

CREATE TABLE sends (
    tenant_id     text        NOT NULL,
    id            text        NOT NULL,
    contact_id    text        NOT NULL,
    email         text        NOT NULL,
    template_id   text        NOT NULL,
    template_name text        NOT NULL,
    subject       text        NOT NULL,
    status        text        NOT NULL,
    source        text        NOT NULL,
    source_id     text        NOT NULL,
    created_at    timestamptz NOT NULL,
    sent_at       timestamptz,
    delivered_at  timestamptz,
    opened_at     timestamptz,
    clicked_at    timestamptz,
    bounced_at    timestamptz,
    complained_at timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);
-- ListContactSends: newest first; ids are ULIDs, so id order is creation order.
CREATE INDEX sends_by_contact ON sends (tenant_id, contact_id, id);

CREATE TABLE scheduled_sends (
    tenant_id     text        NOT NULL,
    id            text        NOT NULL,
    contact_id    text        NOT NULL,
    email         text        NOT NULL,
    template_id   text        NOT NULL,
    template_name text        NOT NULL,
    subject       text        NOT NULL,
    scheduled_for timestamptz NOT NULL,
    source        text        NOT NULL,
    source_id     text        NOT NULL,
    step          integer     NOT NULL,
    status        text        NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX scheduled_sends_pending ON scheduled_sends (tenant_id, contact_id, scheduled_for, id)
    WHERE status = 'pending';

CREATE TABLE sequence_enrolments (
    tenant_id     text        NOT NULL,
    contact_id    text        NOT NULL,
    sequence_id   text        NOT NULL,
    sequence_name text        NOT NULL,
    status        text        NOT NULL,
    current_step  integer     NOT NULL,
    enrolled_at   timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    completed_at  timestamptz,
    exited_at     timestamptz,
    PRIMARY KEY (tenant_id, contact_id, sequence_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE segment_memberships (
    tenant_id    text        NOT NULL,
    contact_id   text        NOT NULL,
    segment_id   text        NOT NULL,
    segment_name text        NOT NULL,
    joined_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, segment_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);

-- AIP-155 request ids. The response is kept so a retry returns the first result; it
-- names the contact, so it is erased with the contact.
CREATE TABLE idempotency_keys (
    tenant_id   text        NOT NULL,
    request_id  text        NOT NULL,
    method      text        NOT NULL,
    fingerprint bytea       NOT NULL,
    contact_id  text,
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);
