-- Two aids to the filters and counts of issue 16, both kept by triggers so that every
-- way a row gets in (the service's statements, COPY, a hand-written INSERT, an older
-- binary during a rolling deploy) keeps them exact.
--
-- 1. Id floors. A contact id is `con_` + a ULID whose first ten characters encode a
--    time in milliseconds, and the service makes an id no earlier than the row's
--    created_at (domain::ids): so `created_at >= t` implies `id >= 'con_' ||
--    kraiter_ulid_time(t)`, and a ListContacts in id order with a created_at range
--    can start its walk of the primary key there instead of at the tenant's first
--    contact (store/common/filter.rs, `id_floor`). A row that breaks the rule (its id
--    earlier than its created_at) is recorded here: `min_id` is the smallest id of
--    such rows the tenant ever had, and the walk starts no later than it.
-- 2. Exact counts. `contact_counts` holds deltas of the number of a tenant's
--    contacts, one row per tenant and server process (`pg_backend_pid()`): a process
--    runs one transaction at a time, so no two transactions ever wait for the same
--    counter row (no hot row, no deadlock), and the whole-tenant CountContacts is the
--    sum of a few rows (store/common/count.rs).

-- The ULID time part (ten Crockford base32 characters) of `ms` milliseconds since
-- the epoch; '' before the epoch (every id sorts after 'con_').
CREATE FUNCTION kraiter_ulid_time_ms(ms bigint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN CASE WHEN ms < 0 THEN '' ELSE
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> 45) & 31)::int + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> 40) & 31)::int + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> 35) & 31)::int + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> 30) & 31)::int + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> 25) & 31)::int + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> 20) & 31)::int + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> 15) & 31)::int + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> 10) & 31)::int + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> 5) & 31)::int + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (ms & 31)::int + 1, 1)
    END;

-- The same for a time. The epoch of a timestamptz does not depend on the session's
-- time zone, so this is immutable although extract() in general is not.
CREATE FUNCTION kraiter_ulid_time(at timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN kraiter_ulid_time_ms(floor(extract(epoch FROM at) * 1000)::bigint);

CREATE TABLE contact_id_floors (
    tenant_id text PRIMARY KEY,
    min_id    text NOT NULL
);

CREATE FUNCTION kraiter_contact_id_floor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_id_floors (tenant_id, min_id) VALUES (NEW.tenant_id, NEW.id)
        ON CONFLICT (tenant_id) DO UPDATE
        SET min_id = least(contact_id_floors.min_id, excluded.min_id);
    RETURN NULL;
END $$;

-- Fires only for a row that breaks the rule; the service's rows never do. An
-- UPDATE that sets neither column does not evaluate it.
CREATE TRIGGER contacts_id_floor
    AFTER INSERT OR UPDATE OF id, created_at ON contacts
    FOR EACH ROW WHEN (NEW.id < 'con_' || kraiter_ulid_time(NEW.created_at))
    EXECUTE FUNCTION kraiter_contact_id_floor();

CREATE TABLE contact_counts (
    tenant_id text   NOT NULL,
    -- The writing process's pid; 0 for the rows counted when this migration ran.
    shard     int    NOT NULL,
    n         bigint NOT NULL,
    PRIMARY KEY (tenant_id, shard)
);

CREATE FUNCTION kraiter_contacts_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_counts (tenant_id, shard, n)
        SELECT tenant_id, pg_backend_pid(), count(*) FROM added GROUP BY tenant_id
        ON CONFLICT (tenant_id, shard) DO UPDATE SET n = contact_counts.n + excluded.n;
    RETURN NULL;
END $$;

CREATE FUNCTION kraiter_contacts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_counts (tenant_id, shard, n)
        SELECT tenant_id, pg_backend_pid(), -count(*) FROM removed GROUP BY tenant_id
        ON CONFLICT (tenant_id, shard) DO UPDATE SET n = contact_counts.n + excluded.n;
    RETURN NULL;
END $$;

CREATE FUNCTION kraiter_contacts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM contact_counts;
    RETURN NULL;
END $$;

-- No writer may add or remove a contact between the backfill and the triggers.
LOCK TABLE contacts IN SHARE ROW EXCLUSIVE MODE;

INSERT INTO contact_id_floors (tenant_id, min_id)
    SELECT tenant_id, min(id) FROM contacts
    WHERE id < 'con_' || kraiter_ulid_time(created_at)
    GROUP BY tenant_id;

INSERT INTO contact_counts (tenant_id, shard, n)
    SELECT tenant_id, 0, count(*) FROM contacts GROUP BY tenant_id;

-- Statement triggers: a batch of rows costs one counter write, not one per row.
CREATE TRIGGER contacts_count_added
    AFTER INSERT ON contacts REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION kraiter_contacts_added();
CREATE TRIGGER contacts_count_removed
    AFTER DELETE ON contacts REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION kraiter_contacts_removed();
CREATE TRIGGER contacts_count_truncated
    AFTER TRUNCATE ON contacts
    FOR EACH STATEMENT EXECUTE FUNCTION kraiter_contacts_truncated();
