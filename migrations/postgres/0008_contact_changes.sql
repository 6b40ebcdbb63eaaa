-- The change feed's outbox (WatchContacts): one row per change of a contact,
-- written in the transaction of the write itself. A change's position is
-- (xid, seq): `xid` is stamped when the change is written, as
-- greatest(pg_current_xact_id(), pg_snapshot_xmax(pg_current_snapshot())), and
-- `seq` orders the changes of one transaction. A reader delivers only changes whose
-- xid is below the xmin of its snapshot, in (xid, seq) order; see
-- src/store/common/changes.rs for why no later commit can then land before a
-- delivered position. The columns after `occurred_at` are the contact after the
-- change; NULL for a deletion, and set to NULL in every earlier change of a contact
-- when it is erased.
CREATE TABLE contact_changes (
    tenant_id      text        NOT NULL,
    xid            xid8        NOT NULL,
    -- Only a tie-break inside one transaction, never an id or a position of its own.
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    type           text        NOT NULL,
    contact_id     text        NOT NULL,
    -- A JSON array of field names; NULL once the contact is erased.
    changed_fields text,
    occurred_at    timestamptz NOT NULL,
    email          text,
    properties     jsonb,
    suppressed     boolean,
    unsubscribed   boolean,
    created_at     timestamptz,
    updated_at     timestamptz,
    revision       bigint,
    -- When the row was written, for the retention purge.
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, xid, seq)
);

-- An erasure scrubs the contact's earlier changes.
CREATE INDEX contact_changes_by_contact ON contact_changes (tenant_id, contact_id);
-- The purge takes the oldest rows of every tenant.
CREATE INDEX contact_changes_by_age ON contact_changes (recorded_at);

-- The last position purged per tenant: a resume token before it is expired
-- (RESUME_TOKEN_EXPIRED), never a silent gap.
CREATE TABLE contact_change_watermarks (
    tenant_id text   PRIMARY KEY,
    xid       xid8   NOT NULL,
    seq       bigint NOT NULL
);
