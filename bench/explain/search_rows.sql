-- Investigation only (issue 15, session 16): the trigram index on a table of search rows,
-- one per contact written at its creation, plus one per update with the values it
-- added. A row is never updated, so an update of `contacts` writes no trigram of the
-- values it kept; a search would take the contacts of rows that match and recheck each
-- against its current `search_text` (rows may hold values since removed). A contact
-- with more than 8 rows gets one row of its current text instead (not reached by the
-- bench, which patches a contact once, but its check is paid). Kept by statement
-- triggers from `search_text`, which the service writes unchanged; the index takes the
-- old one's name so the import's merge (store/postgres/write_tx.rs) merges it. Used as
-- bench/explain/search_values.sql is (BENCHMARKS.md, "One search row per value").
\timing on
SET maintenance_work_mem = '512MB';
BEGIN;
CREATE TABLE contact_search_rows (
    tenant_id  text NOT NULL,
    contact_id text NOT NULL,
    text       text NOT NULL
);
INSERT INTO contact_search_rows SELECT tenant_id, id, search_text FROM contacts;
CREATE INDEX contact_search_rows_contact ON contact_search_rows (tenant_id, contact_id);
DROP INDEX contacts_search_tenant;
CREATE INDEX contacts_search_tenant ON contact_search_rows
    USING gin (text gin_trgm_ops, tenant_id);

CREATE FUNCTION search_rows_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_search_rows SELECT tenant_id, id, search_text FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION search_rows_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH n AS (
        SELECT n.tenant_id, n.id, v FROM new_rows n, unnest(string_to_array(n.search_text, E'\n')) AS v
    ), o AS (
        SELECT o.tenant_id, o.id, v FROM old_rows o, unnest(string_to_array(o.search_text, E'\n')) AS v
    ), came AS (
        SELECT * FROM n EXCEPT SELECT * FROM o
    )
    INSERT INTO contact_search_rows
    SELECT tenant_id, id, string_agg(v, E'\n') FROM came GROUP BY tenant_id, id;
    -- Contacts past 8 rows: one row of their current text.
    WITH heavy AS (
        SELECT r.tenant_id, r.contact_id FROM contact_search_rows r
        JOIN new_rows n ON r.tenant_id = n.tenant_id AND r.contact_id = n.id
        GROUP BY 1, 2 HAVING count(*) > 8
    ), gone AS (
        DELETE FROM contact_search_rows r USING heavy h
        WHERE r.tenant_id = h.tenant_id AND r.contact_id = h.contact_id
    )
    INSERT INTO contact_search_rows
    SELECT n.tenant_id, n.id, n.search_text FROM new_rows n
    JOIN heavy h ON h.tenant_id = n.tenant_id AND h.contact_id = n.id;
    RETURN NULL;
END $$;

CREATE FUNCTION search_rows_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM contact_search_rows s USING old_rows o
    WHERE s.tenant_id = o.tenant_id AND s.contact_id = o.id;
    RETURN NULL;
END $$;

CREATE TRIGGER search_rows_inserted AFTER INSERT ON contacts
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION search_rows_inserted();
CREATE TRIGGER search_rows_updated AFTER UPDATE ON contacts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION search_rows_updated();
CREATE TRIGGER search_rows_deleted AFTER DELETE ON contacts
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION search_rows_deleted();
COMMIT;
VACUUM ANALYZE contact_search_rows;
SELECT pg_size_pretty(pg_relation_size('contact_search_rows')) AS heap,
       pg_size_pretty(pg_relation_size('contact_search_rows_contact')) AS by_contact,
       pg_size_pretty(pg_relation_size('contacts_search_tenant')) AS trigrams,
       (SELECT count(*) FROM contact_search_rows) AS search_rows;
