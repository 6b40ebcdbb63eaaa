-- The trigram index takes new rows into a pending list (GIN "fast update") that every
-- search scans linearly until the list is merged into the index. At the default
-- limit (4 MB, some 3,000 contacts) a busy tenant's searches pay up to ~10 ms for
-- that scan, and the write that crosses the limit pays the whole merge. At the
-- smallest limit the scan stays under a millisecond and merges come in small,
-- frequent batches; measured with concurrent single-row inserts it is also faster
-- to write than either the default or no pending list at all (see BENCHMARKS.md).
ALTER INDEX contacts_tenant_search SET (gin_pending_list_limit = 64);
