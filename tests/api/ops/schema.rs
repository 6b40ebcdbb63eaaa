//! The PostgreSQL schema can be distributed by tenant (Citus) unchanged: every table
//! has `tenant_id`, has a primary key, and every primary key and unique index leads
//! with it, so each key's rows live on one shard. The README names the exceptions.

use sqlx::Row;

use crate::support::postgres;
use crate::support::{Backend, spawn_app};

/// Small reference tables, replicated to every node rather than distributed: a key is
/// found by its hash before its tenant is known (README, "Scaling").
const REFERENCE_TABLES: &[&str] = &["tenants", "api_keys", "deployment_secrets"];
/// sqlx's own migration bookkeeping, which stays on the coordinator.
const BOOKKEEPING: &str = "_sqlx_migrations";

async fn migrated_database() -> sqlx::PgPool {
    // Starting the app applies every migration.
    drop(spawn_app(Backend::Postgres).await);
    sqlx::PgPool::connect(&postgres::database_url())
        .await
        .expect("connect to the test database")
}

fn distributed(table: &str) -> bool {
    table != BOOKKEEPING && !REFERENCE_TABLES.contains(&table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_primary_key_and_unique_index_leads_with_tenant_id() {
    let pool = migrated_database().await;
    let rows = sqlx::query(
        "SELECT t.relname AS table_name, i.relname AS index_name, \
                (SELECT a.attname FROM pg_attribute a \
                  WHERE a.attrelid = t.oid AND a.attnum = x.indkey[0])::text AS first_column \
           FROM pg_index x \
           JOIN pg_class t ON t.oid = x.indrelid \
           JOIN pg_class i ON i.oid = x.indexrelid \
           JOIN pg_namespace n ON n.oid = t.relnamespace \
          WHERE n.nspname = current_schema() AND (x.indisunique OR x.indisprimary) \
          ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .expect("read the unique indexes");
    let mut checked = 0;
    let mut offending = Vec::new();
    for row in &rows {
        let table: String = row.get("table_name");
        let index: String = row.get("index_name");
        // NULL when the index starts with an expression.
        let first: Option<String> = row.get("first_column");
        if !distributed(&table) {
            continue;
        }
        checked += 1;
        if first.as_deref() != Some("tenant_id") {
            offending.push(format!("{table}.{index} starts with {first:?}"));
        }
    }
    assert!(
        checked >= 8,
        "found only {checked} keys: {rows:?}",
        rows = rows.len()
    );
    assert!(
        offending.is_empty(),
        "keys that do not lead with tenant_id: {offending:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_distributed_table_has_tenant_id_and_a_primary_key() {
    let pool = migrated_database().await;
    let rows = sqlx::query(
        "SELECT t.relname::text AS table_name, \
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.oid \
                          AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS has_tenant, \
                EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = t.oid AND x.indisprimary) \
                  AS has_primary_key \
           FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace \
          WHERE n.nspname = current_schema() AND t.relkind IN ('r', 'p') \
          ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("read the tables");
    let mut tables = Vec::new();
    for row in &rows {
        let table: String = row.get("table_name");
        tables.push(table.clone());
        if !distributed(&table) {
            continue;
        }
        assert!(row.get::<bool, _>("has_tenant"), "{table} has no tenant_id");
        assert!(
            row.get::<bool, _>("has_primary_key"),
            "{table} has no primary key"
        );
    }
    for table in REFERENCE_TABLES {
        assert!(
            tables.iter().any(|t| t == table),
            "reference table {table} exists: {tables:?}"
        );
    }
}
