//! The Rust client through a database outage: writes with a request id are
//! retried until they land, once.

use super::*;

/// Calls of `method` the server has answered UNAVAILABLE so far.
async fn refused(app: &crate::support::TestApp, method: &str) -> f64 {
    use crate::support::metrics::{scrape, try_sample};
    let body = scrape(app.metrics_addr.expect("metrics were asked for")).await;
    let prefix = format!(r#"kraiter_rpc_requests_total{{method="{method}",code="Unavailable"}}"#);
    try_sample(&body, &prefix).unwrap_or(0.0)
}

/// Writes with a request id are retried like reads while the database is down (on a
/// PostgreSQL of the test's own that it stops), land once it is back, and land once:
/// the timeline shows one entry for each. Writes without one are tried once
/// (`ops::unavailable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_with_a_request_id_are_retried_through_an_outage_and_land_once() {
    use crate::support::cluster::TestCluster;
    use crate::support::wait::{PATIENCE, eventually};

    let cluster = TestCluster::start_new();
    let app = crate::support::spawn_app_with(Backend::Postgres, |args| {
        args.store.database_url = cluster.url("kraiter");
        args.store.db_acquire_timeout = std::time::Duration::from_secs(1);
        args.metrics_listen = Some("127.0.0.1:0".parse().expect("an address"));
    })
    .await;
    let retry = RetryPolicy {
        max_retries: 10_000,
        initial_backoff: std::time::Duration::from_millis(10),
        max_backoff: std::time::Duration::from_millis(50),
    };
    let contacts = app.sdk().with_retry(retry).contacts();
    let kept = create(&app.sdk(), "kept@example.com", json!({"v": 1})).await;
    let doomed = create(&app.sdk(), "doomed@example.com", json!({})).await;
    tokio::task::block_in_place(|| cluster.stop());

    let methods = [
        "CreateContact",
        "UpsertContact",
        "UpdateContact",
        "DeleteContact",
    ];
    let mut before = Vec::new();
    for method in methods {
        before.push(refused(&app, method).await);
    }
    let create_task = tokio::spawn({
        let contacts = contacts.clone();
        async move {
            contacts
                .create(pb::CreateContactRequest {
                    email: "new@example.com".into(),
                    request_id: "r-create".into(),
                    ..Default::default()
                })
                .await
        }
    });
    let upsert_task = tokio::spawn({
        let contacts = contacts.clone();
        async move {
            contacts
                .upsert(pb::UpsertContactRequest {
                    email: "upserted@example.com".into(),
                    properties: Some(properties(json!({"a": 1}))),
                    request_id: "r-upsert".into(),
                })
                .await
        }
    });
    let update_task = tokio::spawn({
        let contacts = contacts.clone();
        let id = kept.id.clone();
        async move {
            contacts
                .update(pb::UpdateContactRequest {
                    id,
                    properties: Some(properties(json!({"v": 2}))),
                    request_id: "r-update".into(),
                    ..Default::default()
                })
                .await
        }
    });
    let delete_task = tokio::spawn({
        let contacts = contacts.clone();
        let id = doomed.id.clone();
        async move {
            contacts
                .delete_with(pb::DeleteContactRequest {
                    id,
                    request_id: "r-delete".into(),
                    ..Default::default()
                })
                .await
        }
    });
    // Each write is refused at least twice (so retried) while the database is down.
    for (method, before) in methods.into_iter().zip(before) {
        eventually(PATIENCE, &format!("{method} is refused twice"), || async {
            (refused(&app, method).await - before >= 2.0).then_some(())
        })
        .await;
    }
    assert!(!create_task.is_finished(), "the create gave up");
    tokio::task::block_in_place(|| cluster.start());
    let created = tokio::time::timeout(PATIENCE, create_task)
        .await
        .expect("the create is answered once the database is back")
        .expect("task")
        .expect("the create lands");
    let (upserted, was_new) = tokio::time::timeout(PATIENCE, upsert_task)
        .await
        .expect("the upsert is answered once the database is back")
        .expect("task")
        .expect("the upsert lands");
    assert!(was_new);
    let updated = tokio::time::timeout(PATIENCE, update_task)
        .await
        .expect("the update is answered once the database is back")
        .expect("task")
        .expect("the update lands");
    assert_eq!(
        serde_json::Value::Object(properties_json(updated.properties.as_ref())),
        json!({"v": 2})
    );
    tokio::time::timeout(PATIENCE, delete_task)
        .await
        .expect("the delete is answered once the database is back")
        .expect("task")
        .expect("the delete lands");

    // Once each: the same request ids again replay the first answers.
    let again = contacts
        .create(pb::CreateContactRequest {
            email: "new@example.com".into(),
            request_id: "r-create".into(),
            ..Default::default()
        })
        .await
        .expect("a replayed create");
    assert_eq!(again.id, created.id);
    let (again, was_new) = contacts
        .upsert(pb::UpsertContactRequest {
            email: "upserted@example.com".into(),
            properties: Some(properties(json!({"a": 1}))),
            request_id: "r-upsert".into(),
        })
        .await
        .expect("a replayed upsert");
    assert_eq!((again.id, was_new), (upserted.id.clone(), true));
    let entries = |id: String| {
        let contacts = contacts.clone();
        async move {
            contacts
                .get_timeline(pb::ListContactTimelineRequest {
                    id,
                    ..Default::default()
                })
                .map(|entry| entry.expect("an entry").r#type)
                .collect::<Vec<_>>()
                .await
        }
    };
    assert_eq!(entries(created.id).await, ["contact.created"]);
    assert_eq!(entries(upserted.id).await, ["contact.created"]);
    assert_eq!(
        entries(kept.id).await,
        ["contact.updated", "contact.created"]
    );
    let err = contacts.get(&doomed.id).await.expect_err("deleted");
    assert_eq!(err.reason(), Some(ErrorReason::NotFound));
}
