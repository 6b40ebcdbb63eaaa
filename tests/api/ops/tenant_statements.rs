//! Distribution by tenant (Citus, `deploy/citus.sql`) stays a configuration step only
//! while every statement the store runs on a tenant's tables names `tenant_id`: then
//! each call routes to one shard. The schema test (`ops/schema`) checks the keys;
//! this one runs every RPC of both services against a PostgreSQL recording every
//! statement (`pg_stat_statements`) and inspects each one that touches a tenant's
//! table.

use kraiter_contacts::api::pb;
use sqlx::Connection;

use crate::support::cluster::TestCluster;
use crate::support::requests::{every_rpc, fixture, send};
use crate::support::{Backend, spawn_app_with};

/// Every table whose rows belong to a tenant (all but `api_keys`, `tenants`,
/// `deployment_secrets` and the migrations' bookkeeping).
const TENANT_TABLES: &[&str] = &[
    "contacts",
    "timeline_entries",
    "sends",
    "scheduled_sends",
    "sequence_enrolments",
    "segment_memberships",
    "idempotency_keys",
    "erased_requests",
];

/// Statements that span tenants on purpose, each with why that is fine on a
/// distributed table (Citus runs them on every shard).
const ACROSS_TENANTS: &[(&str, &str)] = &[
    (
        "WHERE created_at <",
        "the retention purge of remembered requests, by age, for every tenant",
    ),
    (
        "WHERE erased_at <",
        "the retention purge of erased-request tombstones, by age, for every tenant",
    ),
];

fn touches_tenant_table(query: &str) -> bool {
    let lower = query.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    TENANT_TABLES.iter().any(|table| words.contains(table))
}

/// Migrations: DDL, whatever comment lines lead it.
fn is_schema_change(query: &str) -> bool {
    let code = query
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("--"))
        .unwrap_or_default();
    let head = code.to_uppercase();
    // `LOCK TABLE`: a migration holding writers off while it backfills.
    [
        "CREATE ",
        "ALTER ",
        "DROP ",
        "COMMENT ",
        "DO ",
        "LOCK TABLE ",
    ]
    .iter()
    .any(|prefix| head.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_on_a_tenant_table_names_the_tenant() {
    let cluster = TestCluster::start_new_with(&[
        "shared_preload_libraries=pg_stat_statements",
        "pg_stat_statements.track=all",
        "pg_stat_statements.max=5000",
    ]);
    let url = cluster.url("kraiter");
    let app = spawn_app_with(Backend::Postgres, |args| {
        args.store.database_url = url.clone();
        args.limits.request_id_retention = std::time::Duration::from_secs(1);
    })
    .await;
    let mut clients = (app.client(), app.activity());
    for _ in 0..2 {
        let f = fixture(&mut clients).await;
        for request in every_rpc(&f) {
            // Outcomes do not matter here, only the statements the calls ran.
            let _ = send(&mut clients, request).await;
        }
    }
    let search = pb::ListContactsRequest {
        search: "example".into(),
        suppressed: Some(false),
        ..Default::default()
    };
    let _ = send(&mut clients, crate::support::requests::Req::List(search)).await;
    // Long enough for a purge to have run.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut db)
        .await
        .expect("the extension");
    let queries: Vec<String> = sqlx::query_scalar(
        "SELECT query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
         WHERE d.datname = 'kraiter'",
    )
    .fetch_all(&mut db)
    .await
    .expect("the recorded statements");
    let mut checked = 0;
    let mut offenders = Vec::new();
    let mut across = std::collections::BTreeSet::new();
    for query in &queries {
        if !touches_tenant_table(query)
            || is_schema_change(query)
            || query.contains("pg_stat_statements")
        {
            continue;
        }
        checked += 1;
        let named = query.to_lowercase().contains("tenant_id");
        let allowed = ACROSS_TENANTS
            .iter()
            .find(|(marker, _)| query.contains(marker));
        match allowed {
            _ if named => {}
            Some((marker, _)) => {
                across.insert(*marker);
            }
            None => offenders.push(query.clone()),
        }
    }
    println!(
        "tenant statements: {checked} distinct statements on tenant tables, of {} recorded",
        queries.len()
    );
    assert!(
        checked >= 30,
        "the calls ran the store's statements: {checked}"
    );
    assert_eq!(
        across.len(),
        ACROSS_TENANTS.len(),
        "every statement allowed to span tenants ran (none is stale)"
    );
    assert!(
        offenders.is_empty(),
        "statements on a tenant's table that do not name tenant_id:\n{}",
        offenders.join("\n---\n")
    );
}
