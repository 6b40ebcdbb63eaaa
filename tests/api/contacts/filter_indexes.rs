//! Hot-property indexes (`kraiter-contacts index create|list|drop`, issue 16): built
//! on both backends, listed, matched by the planner to the filters' own expressions,
//! dropped; answers are the same with and without them.

use kraiter_contacts::api::pb::{ContactOrder, FilterOperator as Op};
use kraiter_contacts::domain::{TenantId, hash_api_key};
use kraiter_contacts::store::property_index::{self, parse_property};
use serde_json::json;

use super::filter_calls::{all, cond, count, emails, list};
use crate::conformance;
use crate::support::{Backend, TestApp, create, spawn_app};

async fn tenant_of(app: &TestApp) -> TenantId {
    app.store
        .tenant_for_key(&hash_api_key(&app.key))
        .await
        .expect("lookup")
        .expect("the app's key is live")
}

/// The plan of a range on the indexed property, as each database explains it.
async fn plan_of_a_range(app: &TestApp, backend: Backend, tenant: &TenantId) -> String {
    use sqlx::Connection;
    match backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&app.database_url)
                .await
                .expect("connect");
            // A few hundred rows fit a page or two, which a sequential scan reads
            // cheaper: forbid it, so the plan shows whether the index matches at all.
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut conn)
                .await
                .expect("set");
            // The expression `store::postgres::filter::json_typed` renders for `plan`.
            let rows: Vec<String> = sqlx::query_scalar(
                "EXPLAIN SELECT id FROM contacts WHERE tenant_id = $1 AND \
                 (CASE WHEN jsonb_typeof((properties -> 'plan')) = 'string' \
                 THEN (properties -> 'plan') #>> '{}' END) COLLATE \"C\" >= $2",
            )
            .bind(tenant.as_str())
            .bind("zz")
            .fetch_all(&mut conn)
            .await
            .expect("explain");
            rows.join("\n")
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
                .await
                .expect("open");
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
                "EXPLAIN QUERY PLAN SELECT id FROM contacts WHERE tenant_id = ?1 AND \
                 json_type(properties, '$.\"plan\"') = 'text' AND \
                 json_extract(properties, '$.\"plan\"') >= ?2",
            )
            .bind(tenant.as_str())
            .bind("zz")
            .fetch_all(&mut conn)
            .await
            .expect("explain");
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
    }
}

async fn a_hot_property_index_is_built_used_and_dropped(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    for i in 0..300 {
        let plan = match i % 3 {
            0 => json!(format!("plan-{i:03}")),
            1 => json!(i),
            _ => json!(null),
        };
        create(
            &mut client,
            &format!("h{i:03}@example.com"),
            json!({"plan": plan}),
        )
        .await;
    }
    let filter = all(vec![
        cond("properties.plan", Op::GreaterThanOrEqual, json!("plan-150")),
        cond("properties.plan", Op::LessThan, json!("plan-200")),
    ]);
    let numbers = cond("properties.plan", Op::LessThan, json!(30));
    let before = (
        emails(
            &list(
                &mut client,
                Some(filter.clone()),
                ContactOrder::Unspecified,
                7,
            )
            .await,
        ),
        count(&mut client, Some(numbers.clone())).await,
    );
    assert_eq!(
        (before.0.len(), before.1),
        (17, 10),
        "plan-150 to plan-198 by 3; 1 to 28 by 3"
    );

    let tenant = tenant_of(&app).await;
    let path = parse_property("plan").expect("a plain key");
    let url = &app.database_url;
    property_index::create(url, &tenant, &path)
        .await
        .expect("create");
    property_index::create(url, &tenant, &path)
        .await
        .expect("create again is a no-op");
    let listed = tenants_indexes(url, &tenant).await;
    let expected = if backend == Backend::Postgres { 2 } else { 1 };
    assert_eq!(listed.len(), expected, "{listed:?}");
    let plan = plan_of_a_range(&app, backend, &tenant).await;
    let names: Vec<&str> = listed.iter().map(|index| index.name.as_str()).collect();
    assert!(
        names.iter().any(|name| plan.contains(name)),
        "the planner uses {names:?}: {plan}"
    );

    let after = (
        emails(
            &list(
                &mut client,
                Some(filter.clone()),
                ContactOrder::Unspecified,
                7,
            )
            .await,
        ),
        count(&mut client, Some(numbers.clone())).await,
    );
    assert_eq!(after, before, "the same answers with the index");
    if backend == Backend::Postgres {
        a_build_left_invalid_is_rebuilt(url, &tenant, &path, &names).await;
    }
    property_index::drop(url, &tenant, &path)
        .await
        .expect("drop");
    assert!(tenants_indexes(url, &tenant).await.is_empty());
}

/// The property indexes of `tenant` (on PostgreSQL, other tests' tenants have theirs
/// in the same database; a SQLite file is the test's own).
async fn tenants_indexes(url: &str, tenant: &TenantId) -> Vec<property_index::PropertyIndex> {
    let partial = "WHERE (tenant_id = '";
    let own = format!("{partial}{tenant}'");
    let listed = property_index::list(url).await.expect("list");
    listed
        .into_iter()
        .filter(|index| !index.definition.contains(partial) || index.definition.contains(&own))
        .collect()
}

/// A build that failed (or was interrupted) leaves its index invalid: `create` again
/// rebuilds it, where `IF NOT EXISTS` alone would keep the useless one.
async fn a_build_left_invalid_is_rebuilt(
    url: &str,
    tenant: &TenantId,
    path: &kraiter_contacts::domain::filter::PropertyPath,
    names: &[&str],
) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let valid = |name: String| {
        sqlx::query_scalar::<_, bool>(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = $1",
        )
        .bind(name)
    };
    // What a failed `CREATE INDEX CONCURRENTLY` leaves: the index, marked invalid.
    sqlx::query("UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::regclass")
        .bind(names[0])
        .execute(&mut conn)
        .await
        .expect("mark the index invalid (the tests' role is a superuser)");
    let before = valid(names[0].to_owned()).fetch_one(&mut conn).await;
    assert!(!before.expect("the index"), "marked invalid");
    property_index::create(url, tenant, path)
        .await
        .expect("create again");
    let after = valid(names[0].to_owned()).fetch_one(&mut conn).await;
    assert!(after.expect("the index, rebuilt"), "valid again");
}

conformance!(a_hot_property_index_is_built_used_and_dropped);
