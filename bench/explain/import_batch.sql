-- EXPLAIN (ANALYZE, BUFFERS, WAL) of one half-existing ImportContacts batch, as the
-- service sends its statements (copies of store/common/batch.rs's and changes.rs's as
-- of BENCHMARKS.md's ImportContacts sixth run, not pinned to them). Against a
-- cluster held by `kraiter-bench --only ImportContacts --skip-sqlite --hold`:
--
--   psql "$URL" -v allnew=false -v nolock=false -v update_extra= \
--        -v variant_setup='SELECT 1' -f bench/explain/import_batch.sql
--
-- allnew=true: a second insert of 500 new rows instead of the update (an all-new
-- batch); nolock=true: the lock statement without FOR UPDATE; update_extra='AND
-- contacts.ctid = r.ctid': the update joined by ctid; variant_setup: run first in the
-- transaction (e.g. 'DROP INDEX contacts_search_tenant'). Everything is rolled back;
-- the two picked tables are made once (500 random existing contacts to patch, 500 as
-- models of new rows).
SELECT tenant_id AS t FROM contacts GROUP BY tenant_id ORDER BY count(*) DESC LIMIT 1 \gset
SELECT to_regclass('pick_upd') IS NULL AS need_picks \gset
\if :need_picks
CREATE TABLE pick_upd AS SELECT * FROM contacts WHERE tenant_id = :'t' ORDER BY random() LIMIT 500;
CREATE TABLE pick_new AS SELECT * FROM contacts WHERE tenant_id = :'t' ORDER BY random() LIMIT 500;
\endif
\set QUIET on
SELECT (floor(random()*1e9))::bigint AS salt \gset
SELECT jsonb_agg(jsonb_build_object('id', id, 'email', email, 'email_key', email_key,
  'properties', (properties || jsonb_build_object('plan','imported','score', :salt % 1000))::text,
  'search_text', search_text || E'\nimported\n' || (:salt % 1000),
  'suppressed', suppressed, 'unsubscribed', unsubscribed, 'revision', revision + 1,
  'created_at', (extract(epoch from created_at)*1e6)::bigint,
  'updated_at', (extract(epoch from clock_timestamp())*1e6)::bigint,
  'ctid', (SELECT c.ctid FROM contacts c WHERE c.tenant_id = :'t' AND c.id = pick_upd.id)::text))::text AS upd FROM pick_upd \gset
SELECT jsonb_agg(jsonb_build_object('id', 'con_Z' || :salt || lpad(n::text, 6, '0'),
  'email', 'n' || :salt || '-' || email, 'email_key', 'n' || :salt || '-' || email_key,
  'properties', properties::text, 'search_text', 'n' || :salt || '-' || search_text,
  'suppressed', false, 'unsubscribed', false, 'revision', 1,
  'created_at', (extract(epoch from clock_timestamp())*1e6)::bigint,
  'updated_at', (extract(epoch from clock_timestamp())*1e6)::bigint) ORDER BY n)::text AS ins
  FROM (SELECT row_number() OVER () AS n, * FROM pick_new) p \gset
SELECT array_agg(k ORDER BY k)::text AS keys FROM (SELECT email_key AS k FROM pick_upd UNION ALL SELECT 'n' || :salt || '-' || email_key FROM pick_new) s \gset
SELECT jsonb_agg(jsonb_build_object('ord', n, 'kind', 'contact.updated', 'contact_id', id,
  'changed_fields', '["properties"]', 'occurred_at', (extract(epoch from clock_timestamp())*1e6)::bigint,
  'email', email, 'properties', properties::text, 'suppressed', false, 'unsubscribed', false,
  'created_at', (extract(epoch from created_at)*1e6)::bigint,
  'updated_at', (extract(epoch from clock_timestamp())*1e6)::bigint, 'revision', revision + 1))::text AS chg
  FROM (SELECT row_number() OVER () AS n, * FROM pick_upd) p \gset
SELECT jsonb_agg(jsonb_build_object('contact_id', id, 'id', 'tle_Z' || :salt || lpad(n::text, 6, '0'),
  'kind', 'contact.updated', 'occurred_at', (extract(epoch from clock_timestamp())*1e6)::bigint,
  'data', '{"changes":[{"key":"score","before":1,"after":2}]}'))::text AS tle
  FROM (SELECT row_number() OVER () AS n, * FROM pick_upd) p \gset
\set QUIET off
BEGIN;
SET LOCAL plan_cache_mode = force_generic_plan;
SET LOCAL gin_pending_list_limit = '16MB';
:variant_setup;
\echo == lock
\if :nolock
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF, TIMING OFF, SUMMARY ON)
SELECT id FROM contacts WHERE tenant_id = :'t' AND email_key = ANY(:'keys'::text[]) ORDER BY email_key;
\else
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF, TIMING OFF, SUMMARY ON)
SELECT id FROM contacts WHERE tenant_id = :'t' AND email_key = ANY(:'keys'::text[]) ORDER BY email_key FOR UPDATE;
\endif
\if :allnew
\echo == insert (second 500 new, instead of the update)
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF, SUMMARY ON)
INSERT INTO contacts (tenant_id, id, email, email_key, properties, search_text, suppressed, unsubscribed, revision, created_at, updated_at)
SELECT :'t', r.id || 'b', 'b' || r.email, 'b' || r.email_key, r.properties::jsonb, r.search_text, r.suppressed, r.unsubscribed, r.revision,
  timestamptz 'epoch' + r.created_at * interval '1 microsecond', timestamptz 'epoch' + r.updated_at * interval '1 microsecond'
FROM jsonb_to_recordset(:'ins'::jsonb) AS r(id text, email text, email_key text, properties text, search_text text, suppressed boolean, unsubscribed boolean, revision bigint, created_at bigint, updated_at bigint)
WHERE true ORDER BY r.email_key ON CONFLICT (tenant_id, email_key) DO NOTHING RETURNING id;
\else
\echo == update
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF, SUMMARY ON)
UPDATE contacts SET properties = r.properties, search_text = r.search_text, updated_at = r.updated_at, revision = r.revision
FROM (SELECT x.id AS id, x.properties::jsonb AS properties, x.search_text AS search_text,
  x.revision AS revision, timestamptz 'epoch' + x.updated_at * interval '1 microsecond' AS updated_at
  , x.ctid::tid AS ctid FROM jsonb_to_recordset(:'upd'::jsonb) AS x(id text, properties text, search_text text, revision bigint, updated_at bigint, ctid text)) AS r
WHERE contacts.tenant_id = :'t' AND contacts.id = r.id :update_extra;
\endif
\echo == insert
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF, SUMMARY ON)
INSERT INTO contacts (tenant_id, id, email, email_key, properties, search_text, suppressed, unsubscribed, revision, created_at, updated_at)
SELECT :'t', r.id, r.email, r.email_key, r.properties::jsonb, r.search_text, r.suppressed, r.unsubscribed, r.revision,
  timestamptz 'epoch' + r.created_at * interval '1 microsecond', timestamptz 'epoch' + r.updated_at * interval '1 microsecond'
FROM jsonb_to_recordset(:'ins'::jsonb) AS r(id text, email text, email_key text, properties text, search_text text, suppressed boolean, unsubscribed boolean, revision bigint, created_at bigint, updated_at bigint)
WHERE true ORDER BY r.email_key ON CONFLICT (tenant_id, email_key) DO NOTHING RETURNING id;
\echo == changes (updated rows only)
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF, SUMMARY ON)
INSERT INTO contact_changes (tenant_id, type, contact_id, changed_fields, occurred_at, email, properties, suppressed, unsubscribed, created_at, updated_at, revision, recorded_at, xid)
SELECT :'t', r.kind, r.contact_id, r.changed_fields, timestamptz 'epoch' + r.occurred_at * interval '1 microsecond', r.email, r.properties::jsonb, r.suppressed, r.unsubscribed,
  timestamptz 'epoch' + r.created_at * interval '1 microsecond', timestamptz 'epoch' + r.updated_at * interval '1 microsecond', r.revision, now(),
  greatest(pg_current_xact_id(), pg_snapshot_xmax(pg_current_snapshot()))
FROM jsonb_to_recordset(:'chg'::jsonb) AS r(ord bigint, kind text, contact_id text, changed_fields text, occurred_at bigint, email text, properties text, suppressed boolean, unsubscribed boolean, created_at bigint, updated_at bigint, revision bigint) ORDER BY r.ord;
\echo == timeline (updated rows only)
EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF, SUMMARY ON)
INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data)
SELECT :'t', r.contact_id, r.id, r.kind, timestamptz 'epoch' + r.occurred_at * interval '1 microsecond', r.data::jsonb
FROM jsonb_to_recordset(:'tle'::jsonb) AS r(contact_id text, id text, kind text, occurred_at bigint, data text);
\echo == merge pending
SELECT pg_current_wal_insert_lsn() AS lsn0 \gset
\timing on
SELECT gin_clean_pending_list('contacts_search_tenant'::regclass) AS search_pages, gin_clean_pending_list('contacts_properties_tenant'::regclass) AS props_pages;
\timing off
SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :'lsn0') AS merge_wal_bytes;
ROLLBACK;
