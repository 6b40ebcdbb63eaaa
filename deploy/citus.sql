-- Distributing kraiter-contacts by tenant with Citus.
--
-- Not run by the tests: Citus is not packaged for the machines the suite runs on.
-- What the suite does check is what makes these commands enough: every primary key and
-- unique index leads with tenant_id (tests/api/ops/schema.rs), and every statement the
-- service runs on a tenant's table names tenant_id (tests/api/ops/tenant_statements.rs,
-- from pg_stat_statements), so each call is routed to the one shard of its tenant.
--
-- Run on the coordinator, after the service's migrations (`kraiter-contacts migrate`),
-- before any traffic; the worker nodes must be added first:
--   SELECT citus_add_node('worker-1', 5432); ...

CREATE EXTENSION IF NOT EXISTS citus;

-- Small tables read by every call before the tenant is known (an API key is found by
-- its hash): copied whole to every node, so those reads stay local.
SELECT create_reference_table('tenants');
SELECT create_reference_table('api_keys');
SELECT create_reference_table('deployment_secrets');

-- The tenant's tables, sharded by tenant_id and co-located with contacts: a contact's
-- sends, timeline and the rest live on the same shard as the contact, so the foreign
-- keys (ON DELETE CASCADE erases a contact's activity) and the multi-table
-- transactions of a write stay on one node.
SELECT create_distributed_table('contacts', 'tenant_id');
SELECT create_distributed_table('timeline_entries', 'tenant_id', colocate_with => 'contacts');
SELECT create_distributed_table('sends', 'tenant_id', colocate_with => 'contacts');
SELECT create_distributed_table('scheduled_sends', 'tenant_id', colocate_with => 'contacts');
SELECT create_distributed_table('sequence_enrolments', 'tenant_id', colocate_with => 'contacts');
SELECT create_distributed_table('segment_memberships', 'tenant_id', colocate_with => 'contacts');
SELECT create_distributed_table('idempotency_keys', 'tenant_id', colocate_with => 'contacts');
SELECT create_distributed_table('erased_requests', 'tenant_id', colocate_with => 'contacts');

-- Two statements span tenants on purpose: the retention purges of remembered request
-- ids and of their tombstones (`--request-id-retention`). They delete by age with a
-- row-id subquery and a LIMIT (to keep each purge short); on a distributed table a
-- row id is unique only within a shard, so with Citus run the purge per shard instead,
-- e.g. from cron with `--request-id-retention` set long enough never to fire:
--   SELECT run_command_on_shards('idempotency_keys',
--     $$DELETE FROM %s WHERE created_at < now() - interval '7 days'$$);
--   SELECT run_command_on_shards('erased_requests',
--     $$DELETE FROM %s WHERE erased_at < now() - interval '7 days'$$);
