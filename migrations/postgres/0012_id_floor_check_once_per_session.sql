-- The id-floor trigger of 0009, its rule unchanged, checked more cheaply.
--
-- 0009's condition, `NEW.id < 'con_' || kraiter_ulid_time(NEW.created_at)`, is a call
-- of a SQL function that PostgreSQL cannot inline (it is declared immutable, its body
-- calls the stable `extract`), so every INSERT statement planned its body afresh:
-- the most expensive part of a one-row create after the trigram index (BENCHMARKS.md,
-- "Where a PostgreSQL write's CPU goes"). The condition is now a PL/pgSQL function,
-- whose expression is planned once per session, with the millisecond value computed
-- once and `kraiter_ulid_time_ms` (immutable through and through) inlined into it.
-- The same rows fire the trigger: a test compares both conditions at the edges
-- (tests/api/contacts/filter_ranges.rs).
CREATE FUNCTION kraiter_id_below_floor(id text, at timestamptz) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    ms bigint := floor(extract(epoch FROM at) * 1000);
BEGIN
    RETURN id < 'con_' || kraiter_ulid_time_ms(ms);
END $$;

DROP TRIGGER contacts_id_floor ON contacts;
CREATE TRIGGER contacts_id_floor
    AFTER INSERT OR UPDATE OF id, created_at ON contacts
    FOR EACH ROW WHEN (kraiter_id_below_floor(NEW.id, NEW.created_at))
    EXECUTE FUNCTION kraiter_contact_id_floor();
