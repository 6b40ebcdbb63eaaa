-- Id floors, as migrations/postgres/0009 (whose comment says what they are for):
-- `min_id` is the smallest id of a tenant's rows whose id is earlier than their
-- created_at; ListContacts in id order with a created_at range starts its walk of the
-- tenant's ids no later than it. created_at is INTEGER microseconds; the expression
-- is the ULID time part (ten Crockford base32 characters) of its milliseconds.
-- SQLite counts a tenant's contacts from its index fast enough (BENCHMARKS.md), so it
-- keeps no counters.
CREATE TABLE contact_id_floors (
    tenant_id TEXT PRIMARY KEY,
    min_id    TEXT NOT NULL
) STRICT;

INSERT INTO contact_id_floors (tenant_id, min_id)
    SELECT tenant_id, min(id) FROM contacts
    WHERE created_at >= 0 AND id < 'con_' ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((created_at / 1000) >> 45) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((created_at / 1000) >> 40) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((created_at / 1000) >> 35) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((created_at / 1000) >> 30) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((created_at / 1000) >> 25) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((created_at / 1000) >> 20) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((created_at / 1000) >> 15) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((created_at / 1000) >> 10) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((created_at / 1000) >> 5) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((created_at / 1000) & 31) + 1, 1)
    GROUP BY tenant_id;

-- Fires only for a row that breaks the rule; the service's rows never do.
CREATE TRIGGER contacts_id_floor_insert AFTER INSERT ON contacts
WHEN NEW.created_at >= 0 AND NEW.id < 'con_' ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 45) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 40) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 35) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 30) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 25) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 20) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 15) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 10) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 5) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((NEW.created_at / 1000) & 31) + 1, 1)
BEGIN
    INSERT INTO contact_id_floors (tenant_id, min_id) VALUES (NEW.tenant_id, NEW.id)
        ON CONFLICT (tenant_id) DO UPDATE SET min_id = min(min_id, excluded.min_id);
END;

CREATE TRIGGER contacts_id_floor_update AFTER UPDATE OF id, created_at ON contacts
WHEN NEW.created_at >= 0 AND NEW.id < 'con_' ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 45) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 40) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 35) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 30) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 25) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 20) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 15) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 10) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (((NEW.created_at / 1000) >> 5) & 31) + 1, 1) ||
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((NEW.created_at / 1000) & 31) + 1, 1)
BEGIN
    INSERT INTO contact_id_floors (tenant_id, min_id) VALUES (NEW.tenant_id, NEW.id)
        ON CONFLICT (tenant_id) DO UPDATE SET min_id = min(min_id, excluded.min_id);
END;
