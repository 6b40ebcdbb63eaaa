-- The trigram search index moves off `contacts` (issue 15, BENCHMARKS.md "Search rows").
--
-- On `contacts` every update of a contact re-inserted every trigram of its address and
-- properties: no update there is HOT (`properties` and `updated_at` are indexed), so a
-- new row version gets an entry in every index at its new, scattered, heap position.
-- Here the index is over search rows that are never updated: one per contact with its
-- `search_text` at creation, and one per update that adds values, with only those
-- values (the lines of the new `search_text` that the old one lacked). So an update
-- writes the trigrams of what it added and nothing else.
--
-- Rows may hold values since removed, so they only find candidates: a search takes
-- the contacts whose rows match and then tests each contact's current `search_text`
-- (store/postgres/filter.rs). A search term holds no control character
-- (domain::SearchTerm), so it lies within one line of the text, and that line is in
-- some row: nothing is missed. A contact past 8 rows gets one row of its current
-- text instead, so rows do not pile up on a contact updated often.
--
-- `search_text` is still computed by the service (domain::search_text) and only split
-- here, as SQLite's FTS triggers index it (migrations/sqlite/0001). The index keeps
-- its old name: the import merges its pending list by that name (write_tx.rs).
CREATE TABLE contact_search_rows (
    tenant_id  text   NOT NULL,
    contact_id text   NOT NULL,
    -- Only a key: the text may be longer than a btree entry can be.
    row_id     bigint GENERATED ALWAYS AS IDENTITY,
    text       text   NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, row_id)
);

INSERT INTO contact_search_rows (tenant_id, contact_id, text)
SELECT tenant_id, id, search_text FROM contacts;
DROP INDEX contacts_search_tenant;
CREATE INDEX contacts_search_tenant ON contact_search_rows
    USING gin (text gin_trgm_ops, tenant_id);

CREATE FUNCTION kraiter_search_rows_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_search_rows (tenant_id, contact_id, text)
    SELECT tenant_id, id, search_text FROM new_rows;
    RETURN NULL;
END $$;

-- Statement triggers with transition tables, so an import batch's 500 updates are
-- two statements here, not 500 (a trigger with transition tables cannot name its
-- columns, so this one fires for updates of any column and skips rows whose text
-- stayed the same).
CREATE FUNCTION kraiter_search_rows_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changed AS (
        SELECT n.tenant_id, n.id, n.search_text AS new_text, o.search_text AS old_text
        FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
        WHERE n.search_text <> o.search_text
    ), came AS (
        SELECT tenant_id, id, line
        FROM changed, unnest(string_to_array(new_text, E'\n')) AS line
        EXCEPT
        SELECT tenant_id, id, line
        FROM changed, unnest(string_to_array(old_text, E'\n')) AS line
    )
    INSERT INTO contact_search_rows (tenant_id, contact_id, text)
    SELECT tenant_id, id, string_agg(line, E'\n') FROM came GROUP BY tenant_id, id;
    IF FOUND THEN
        WITH heavy AS (
            SELECT r.tenant_id, r.contact_id FROM contact_search_rows r
            JOIN new_rows n ON r.tenant_id = n.tenant_id AND r.contact_id = n.id
            GROUP BY r.tenant_id, r.contact_id HAVING count(*) > 8
        ), gone AS (
            DELETE FROM contact_search_rows r USING heavy h
            WHERE r.tenant_id = h.tenant_id AND r.contact_id = h.contact_id
        )
        INSERT INTO contact_search_rows (tenant_id, contact_id, text)
        SELECT n.tenant_id, n.id, n.search_text FROM new_rows n
        JOIN heavy h ON h.tenant_id = n.tenant_id AND h.contact_id = n.id;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION kraiter_search_rows_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM contact_search_rows r USING old_rows o
    WHERE r.tenant_id = o.tenant_id AND r.contact_id = o.id;
    RETURN NULL;
END $$;

CREATE FUNCTION kraiter_search_rows_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE contact_search_rows;
    RETURN NULL;
END $$;

CREATE TRIGGER contacts_search_rows_inserted AFTER INSERT ON contacts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kraiter_search_rows_inserted();
CREATE TRIGGER contacts_search_rows_updated AFTER UPDATE ON contacts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kraiter_search_rows_updated();
CREATE TRIGGER contacts_search_rows_deleted AFTER DELETE ON contacts
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kraiter_search_rows_deleted();
CREATE TRIGGER contacts_search_rows_truncated AFTER TRUNCATE ON contacts
    FOR EACH STATEMENT EXECUTE FUNCTION kraiter_search_rows_truncated();
