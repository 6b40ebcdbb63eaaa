-- The search index with the trigrams as its first column and the tenant second.
--
-- GIN takes an index's scan keys in column order, and when a key rejects a row it
-- starts over from the first key. With the tenant first, every row proposed by the
-- search term's rarest trigram and then rejected by its other trigrams sent the scan
-- back into the tenant's posting tree (one entry per contact of the tenant): a
-- descent and a page of row pointers decoded per rejected row. At 1,000,000
-- contacts a rare-term search read 450 index pages, 268 with this order; a term
-- with no match 204, now 24. With the trigrams first the tenant is only consulted
-- for rows that hold the whole term, and it still filters inside the index: another
-- tenant's matches cost index work, never heap fetches (a trigram-only index
-- fetched and rechecked every one of them, 1.3 s for a term that another tenant
-- had in 1,000,000 rows). See BENCHMARKS.md.
--
-- Migrations run in a transaction, so this build blocks writes to contacts while it
-- runs (some 40 s per million contacts on the benchmark machine). To avoid that on a
-- large table, build the index beforehand with CREATE INDEX CONCURRENTLY and this
-- exact definition (and check it is valid): it is then kept.
CREATE INDEX IF NOT EXISTS contacts_search_tenant ON contacts
    USING gin (search_text gin_trgm_ops, tenant_id) WITH (gin_pending_list_limit = 64);
DROP INDEX IF EXISTS contacts_tenant_search;
