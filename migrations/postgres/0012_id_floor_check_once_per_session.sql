-- The id-floor trigger of 0009, its rule unchanged, checked more cheaply.
--
-- 0009's condition, `NEW.id < 'con_' || kraiter_ulid_time(NEW.created_at)`, is a call
-- of a SQL function that PostgreSQL cannot inline (it is declared immutable, its body
-- calls the stable `extract`), so every INSERT statement planned its body afresh:
-- after the trigram index, the largest cost of a one-row create (BENCHMARKS.md,
-- "Where a PostgreSQL write's CPU goes"). The condition is now a PL/pgSQL function,
-- whose expression is planned once per session, with the milliseconds computed once.
-- The same rows fire the trigger: a test compares the conditions and the time parts
-- (tests/api/contacts/filter_ranges.rs).

-- `kraiter_ulid_time_ms` (0009) in a third of the operations, as its expression is set
-- up again in every transaction: the ten 5-bit groups of the low 50 bits are spread
-- to 6 bits each, so base64 writes one character per group ('A'..'f' for 0..31),
-- which `translate` maps to Crockford's alphabet.
CREATE FUNCTION kraiter_ulid_time_ms_packed(ms bigint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN CASE WHEN ms < 0 THEN '' ELSE translate(left(encode(int8send((
              (ms & 31) | ((ms & 992) << 1) | ((ms & 31744) << 2)
            | ((ms & 1015808) << 3) | ((ms & 32505856) << 4)
            | ((ms & 1040187392) << 5) | ((ms & 33285996544) << 6)
            | ((ms & 1065151889408) << 7) | ((ms & 34084860461056) << 8)
            | ((ms & 1090715534753792) << 9)) << 4), 'base64'), 10),
        'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef', '0123456789ABCDEFGHJKMNPQRSTVWXYZ') END;

CREATE FUNCTION kraiter_id_below_floor(id text, at timestamptz) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    ms bigint := floor(extract(epoch FROM at) * 1000);
BEGIN
    RETURN id < 'con_' || kraiter_ulid_time_ms_packed(ms);
END $$;

DROP TRIGGER contacts_id_floor ON contacts;
CREATE TRIGGER contacts_id_floor
    AFTER INSERT OR UPDATE OF id, created_at ON contacts
    FOR EACH ROW WHEN (kraiter_id_below_floor(NEW.id, NEW.created_at))
    EXECUTE FUNCTION kraiter_contact_id_floor();
