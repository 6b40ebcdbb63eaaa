-- Indexes for the typed filters and orders of ListContacts and CountContacts
-- (issue 16; which filters they serve is in README.md, "Filters and orders").
--
-- Keyset orders by time: `(created_at, id)` and `(updated_at, id)` within a tenant,
-- read forwards or backwards, also serve ranges on either time.
CREATE INDEX IF NOT EXISTS contacts_tenant_created ON contacts (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS contacts_tenant_updated ON contacts (tenant_id, updated_at, id);
-- The email order and email ranges compare in byte order (COLLATE "C"), the same on
-- every database whatever its locale and the same as SQLite; the unique
-- `(tenant_id, email_key)` index keeps serving equality.
CREATE INDEX IF NOT EXISTS contacts_tenant_email_order
    ON contacts (tenant_id, email_key COLLATE "C", id);
-- Equality on any property (rendered as containment, `properties @> '{"k": v}'`),
-- without setup: `jsonb_path_ops` hashes each path-and-value, and the tenant, second
-- as in the search index, filters inside the index. The pending list is kept small
-- as the search index's is (0003): writes merge it in small batches.
--
-- Migrations run in a transaction, so these builds block writes to contacts while
-- they run. On a large table, build them beforehand with CREATE INDEX CONCURRENTLY
-- and these exact definitions (and check they are valid): they are then kept.
CREATE INDEX IF NOT EXISTS contacts_properties_tenant ON contacts
    USING gin (properties jsonb_path_ops, tenant_id) WITH (gin_pending_list_limit = 64);
