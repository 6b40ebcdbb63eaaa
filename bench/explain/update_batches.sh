#!/bin/bash
# UpdateContact's compare-and-set, K contacts per statement, run by pgbench alone: does
# PostgreSQL write a batch of updates for less per row than one statement each? (It
# does not: BENCHMARKS.md, "Updates in one statement, without the service".) Each
# statement reads K random seeded contacts, merges a `lastSeenAt` into their properties
# and search text in SQL (the same for every K), and writes them as the store's
# statement does (the row by revision, its timeline entry, its change), so only the
# number of rows per statement differs between runs. Against a cluster held by
# `kraiter-bench --skip-sqlite --only nothing --hold` (a name no scenario has: it
# seeds 1,000,000 contacts of tenant `bench` and holds; CONTACTS=n for another seed
# size):
#
#   bench/explain/update_batches.sh "$URL" 10 "1 16" "16 2" "16 1"
#
# each pair "K CLIENTS" runs for the given seconds and prints rows/s. It writes
# contacts, timeline entries and changes: a scratch cluster only.
set -euo pipefail
url=$1 seconds=$2
shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
pgbench=${PGBENCH:-/usr/lib/postgresql/15/bin/pgbench}

script() { # K: a pgbench script updating K random contacts in one statement
  local k=$1 i picks=""
  for ((i = 0; i < k; i++)); do
    echo "\\set n$i random(0, ${CONTACTS:-1000000} - 1)"
    picks+="${picks:+, }:n$i"
  done
  # No `:word` may appear in the SQL but pgbench's variables, hence jsonb_build_object.
  tr '\n' ' ' <<SQL
WITH ids AS (SELECT 'con_01K' || lpad(n::text, 7, '0') || lpad(n::text, 16, '0') AS id
    FROM unnest(ARRAY[$picks]::bigint[]) n),
r AS (SELECT c.id r_id, c.email r_email, c.email_key r_email_key,
    (c.properties || jsonb_build_object('lastSeenAt', clock_timestamp()::text))::text r_properties,
    split_part(c.search_text, chr(10) || 'ls=', 1) || chr(10) || 'ls=' || clock_timestamp()::text r_search_text,
    now() r_at, 'tle_' || md5(random()::text) r_entry_id, 'contact.updated'::text r_entry_type,
    jsonb_build_object('properties', jsonb_build_object('lastSeenAt',
        jsonb_build_object('before', null, 'after', 'x')))::text r_entry_data,
    c.revision r_revision
    FROM ids JOIN contacts c ON c.tenant_id = 'bench' AND c.id = ids.id),
u AS (UPDATE contacts SET email = r_email, email_key = r_email_key,
        properties = r_properties::jsonb, search_text = r_search_text, updated_at = r_at,
        revision = revision + 1
    FROM r WHERE tenant_id = 'bench' AND id = r_id AND revision = r_revision
    RETURNING tenant_id, id, email, properties, suppressed, unsubscribed, created_at,
        updated_at, revision, r_entry_id, r_entry_type, r_entry_data),
t AS (INSERT INTO timeline_entries (tenant_id, contact_id, id, type, occurred_at, data)
    SELECT tenant_id, id, r_entry_id, r_entry_type, updated_at, r_entry_data::jsonb FROM u),
ch AS (INSERT INTO contact_changes (tenant_id, xid, type, contact_id, changed_fields,
        occurred_at, email, properties, suppressed, unsubscribed, created_at, updated_at, revision)
    SELECT tenant_id, greatest(pg_current_xact_id(), pg_snapshot_xmax(pg_current_snapshot())),
        'UPDATED', id, (SELECT coalesce(jsonb_agg(f), '[]')::text FROM (SELECT 'email' AS f
            WHERE jsonb_exists(r_entry_data::jsonb, 'email') UNION ALL SELECT 'properties.' || kk
            FROM jsonb_object_keys(coalesce(r_entry_data::jsonb -> 'properties', '{}')) kk) s),
        updated_at, email, properties, suppressed, unsubscribed, created_at, updated_at, revision
    FROM u RETURNING contact_id)
SELECT count(*) FROM ch;
SQL
  echo
}

for run in "$@"; do
  read -r k clients <<<"$run"
  script "$k" >"$dir/upd$k.sql"
  tps=$("$pgbench" -n -M prepared -c "$clients" -j 2 -T "$seconds" -f "$dir/upd$k.sql" "$url" 2>&1 |
    sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
  echo "K=$k clients=$clients: $(awk -v t="$tps" -v k="$k" 'BEGIN { printf "%.0f rows/s (%.0f statements/s)", t * k, t }')"
done
