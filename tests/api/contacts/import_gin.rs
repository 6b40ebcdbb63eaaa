//! PostgreSQL only: how an import batch maintains the GIN indexes of contacts
//! (migration 0010, `store/postgres/write_tx.rs`). A batch raises its own
//! pending-list limit and merges the pending lists before it commits; ordinary
//! writes keep the database's 64 kB limit; a service role that does not own the
//! indexes skips the merge and its batches still commit and are found by search.
//! Each test has a database of its own, so no other test's writes are pending.

use kraiter_contacts::api::pb;
use serde_json::json;
use sqlx::{Connection, PgConnection, Row};

use crate::support::imports::{batch, import, row};
use crate::support::{Backend, TestApp, create, pages, postgres, spawn_app_with};

async fn app_on_own_database() -> TestApp {
    let url = postgres::own_database();
    spawn_app_with(Backend::Postgres, |args| args.store.database_url = url).await
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .expect("connect to the test database")
}

/// Pending pages of the two GIN indexes of contacts (`pgstattuple`).
async fn pending_pages(conn: &mut PgConnection) -> Vec<(String, i64)> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        .execute(&mut *conn)
        .await
        .expect("pgstattuple (postgresql-contrib)");
    let rows = sqlx::query(
        "SELECT i, (pgstatginindex(i::regclass)).pending_pages::int8 AS pages \
         FROM unnest(ARRAY['contacts_search_tenant', 'contacts_properties_tenant']) AS i",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("read the pending lists");
    rows.iter()
        .map(|r| (r.get::<String, _>("i"), r.get::<i64, _>("pages")))
        .collect()
}

/// Rows whose trigrams and properties fill far more than a 64 kB pending list.
fn rows(prefix: &str, n: usize) -> Vec<pb::ImportRow> {
    (0..n)
        .map(|i| {
            row(
                &format!("{prefix}{i}@example.com"),
                json!({"city": format!("{prefix}town{i:04}"), "plan": format!("p{i}")}),
            )
        })
        .collect()
}

async fn search_count(app: &TestApp, term: &str) -> usize {
    let request = pb::ListContactsRequest {
        search: term.to_owned(),
        limit: 1000,
        ..Default::default()
    };
    pages(&mut app.client(), request)
        .await
        .iter()
        .map(|page| page.contacts.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_the_small_limit_and_an_import_batch_leaves_nothing_pending() {
    let app = app_on_own_database().await;
    let mut conn = connect(&app.database_url).await;
    let options: Vec<Option<Vec<String>>> = sqlx::query_scalar(
        "SELECT reloptions FROM pg_class WHERE relname IN \
         ('contacts_search_tenant', 'contacts_properties_tenant')",
    )
    .fetch_all(&mut conn)
    .await
    .expect("read the indexes' options");
    assert_eq!(options, [None, None], "no limit is left on the indexes");
    let limit: String = sqlx::query_scalar("SHOW gin_pending_list_limit")
        .fetch_one(&mut conn)
        .await
        .expect("show the limit");
    assert_eq!(
        limit, "64kB",
        "a new session gets the database's small limit"
    );

    let mut client = app.client();
    let responses = import(
        &mut client,
        vec![batch(pb::ImportMode::Upsert, rows("gin", 1000))],
    )
    .await
    .expect("import");
    assert_eq!(responses[0].created, 1000);
    assert!(
        pending_pages(&mut conn)
            .await
            .iter()
            .all(|(_, pages)| *pages == 0),
        "a batch merges its pending lists before it is acknowledged: {:?}",
        pending_pages(&mut conn).await
    );
    assert_eq!(search_count(&app, "gintown0999").await, 1);

    // Ordinary writes keep the 64 kB limit (8 pages): without it the database
    // default (4 MB) would leave these 200 contacts' entries pending.
    for i in 0..200 {
        create(
            &mut client,
            &format!("one{i}@example.com"),
            json!({"city": format!("onetown{i:04}"), "plan": format!("p{i}")}),
        )
        .await;
    }
    for (index, pages) in pending_pages(&mut conn).await {
        assert!(
            pages <= 9,
            "{index}: {pages} pages pending after single creates"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_does_not_own_the_indexes_imports_without_the_merge() {
    let app = app_on_own_database().await;
    let mut admin = connect(&app.database_url).await;
    let role = format!("importer_{}", std::process::id());
    for sql in [
        format!("DROP ROLE IF EXISTS {role}"),
        format!("CREATE ROLE {role} LOGIN"),
        // CREATE: sqlx's migrator ensures its table exists at start-up.
        format!("GRANT USAGE, CREATE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(&sql)
            .execute(&mut admin)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
    let url = app
        .database_url
        .replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(url, app.database_url, "the test URL names its user");
    let other = spawn_app_with(Backend::Postgres, |args| args.store.database_url = url).await;
    let mut client = other.client();
    let responses = import(
        &mut client,
        vec![batch(pb::ImportMode::Upsert, rows("nonowner", 1000))],
    )
    .await
    .expect("an import by a role that does not own the indexes commits");
    assert_eq!(responses[0].created, 1000);
    assert_eq!(search_count(&other, "nonownertown0999").await, 1);
    let pending = pending_pages(&mut admin).await;
    assert!(
        pending.iter().any(|(_, pages)| *pages > 9),
        "without the merge the batch's entries stay pending under its raised limit: {pending:?}"
    );
}
