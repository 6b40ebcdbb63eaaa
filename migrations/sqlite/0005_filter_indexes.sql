-- Indexes for the typed filters and orders of ListContacts and CountContacts
-- (issue 16): keyset orders by time within a tenant, read either way, which also
-- serve ranges on either time. The email order is served by the unique
-- `(tenant_id, email_key)` index. Properties have no general index on SQLite; a
-- hot one gets an index on its `json_extract` expression (`kraiter-contacts index
-- create`).
CREATE INDEX IF NOT EXISTS contacts_tenant_created ON contacts (tenant_id, created_at, id);
CREATE INDEX IF NOT EXISTS contacts_tenant_updated ON contacts (tenant_id, updated_at, id);
