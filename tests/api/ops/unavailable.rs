//! While the database is down, on a PostgreSQL of the test's own that it stops:
//! every RPC answers UNAVAILABLE with `RetryInfo`, as the README promises, and the
//! Rust client (`kraiter_contacts::client`) retries reads and lists until the
//! database is back, but not writes, whose UNAVAILABLE reaches the caller at once.

use std::time::Duration;

use futures::StreamExt;
use kraiter_contacts::client::{ErrorReason, RetryPolicy, pb};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::cluster::TestCluster;
use crate::support::metrics::{scrape, try_sample};
use crate::support::requests::{every_rpc, fixture, send};
use crate::support::wait::{PATIENCE, eventually};
use crate::support::{Backend, TestApp, assert_status, spawn_app_with};

/// An app on `cluster`, whose calls fail within a second once it is down.
async fn spawn_on(cluster: &TestCluster) -> TestApp {
    spawn_app_with(Backend::Postgres, |args| {
        args.store.database_url = cluster.url("kraiter");
        args.store.db_acquire_timeout = Duration::from_secs(1);
        args.metrics_listen = Some("127.0.0.1:0".parse().expect("an address"));
    })
    .await
}

/// A spawned call, whatever it returns, that may have returned.
trait Finished {
    fn finished(&self) -> bool;
}

impl<T> Finished for tokio::task::JoinHandle<T> {
    fn finished(&self) -> bool {
        self.is_finished()
    }
}

/// Calls of `method` the server has answered UNAVAILABLE, in this process so far.
async fn refused(app: &TestApp, method: &str) -> f64 {
    let body = scrape(app.metrics_addr.expect("metrics were asked for")).await;
    let prefix = format!(r#"kraiter_rpc_requests_total{{method="{method}",code="Unavailable"}}"#);
    try_sample(&body, &prefix).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_is_unavailable_with_retry_info_while_the_database_is_down() {
    let cluster = TestCluster::start_new();
    let app = spawn_on(&cluster).await;
    let mut clients = (app.client(), app.activity());
    let f = fixture(&mut clients).await;
    tokio::task::block_in_place(|| cluster.stop());
    let mut tried = 0;
    for request in every_rpc(&f) {
        let what = request.path();
        let result = send(&mut clients, request).await;
        let status = assert_status(result, Code::Unavailable, "UNAVAILABLE", what);
        let delay = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
            .unwrap_or_else(|| panic!("{what}: no RetryInfo with a delay in {status:?}"));
        assert!(delay > Duration::ZERO, "{what}: retry after {delay:?}");
        tried += 1;
    }
    assert!(tried >= 20, "every RPC: {tried}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_retries_reads_until_the_database_is_back_but_not_writes() {
    let cluster = TestCluster::start_new();
    let app = spawn_on(&cluster).await;
    // Patient enough to outlast the outage many times over.
    let retry = RetryPolicy {
        max_retries: 10_000,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    let contacts = app.sdk().with_retry(retry).contacts();
    let contact = contacts
        .create(pb::CreateContactRequest {
            email: "kept@example.com".into(),
            properties: None,
            ..Default::default()
        })
        .await
        .expect("create");
    tokio::task::block_in_place(|| cluster.stop());

    // Writes: one attempt, whose UNAVAILABLE is returned. No other test deletes
    // while its database is down, so the server's count of refused deletes is ours.
    let deletes = refused(&app, "DeleteContact").await;
    let err = tokio::time::timeout(PATIENCE, contacts.delete(&contact.id))
        .await
        .expect("a write is not retried until the database is back")
        .expect_err("delete while down");
    assert_eq!(
        err.reason(),
        Some(ErrorReason::Unavailable),
        "delete: {err:?}"
    );
    assert_eq!(
        refused(&app, "DeleteContact").await - deletes,
        1.0,
        "a write is tried once"
    );
    let create = contacts.create(pb::CreateContactRequest {
        email: "new@example.com".into(),
        properties: None,
        ..Default::default()
    });
    let update = contacts.update(pb::UpdateContactRequest {
        id: contact.id.clone(),
        email: Some("moved@example.com".into()),
        properties: None,
        ..Default::default()
    });
    let writes = [
        (
            "create",
            tokio::time::timeout(PATIENCE, create)
                .await
                .map(|r| r.map(drop)),
        ),
        (
            "update",
            tokio::time::timeout(PATIENCE, update)
                .await
                .map(|r| r.map(drop)),
        ),
    ];
    for (what, result) in writes {
        let result =
            result.unwrap_or_else(|_| panic!("{what} is not retried until the database is back"));
        let err = result.expect_err(what);
        assert_eq!(
            err.reason(),
            Some(ErrorReason::Unavailable),
            "{what}: {err:?}"
        );
    }

    // Reads and lists: retried while the server refuses them, answered once the
    // database is back. No other test reads while its database is down.
    let (gets, lists) = (
        refused(&app, "GetContact").await,
        refused(&app, "ListContacts").await,
    );
    let read = tokio::spawn({
        let contacts = contacts.clone();
        let id = contact.id.clone();
        async move { contacts.get(&id).await }
    });
    let list = tokio::spawn({
        let contacts = contacts.clone();
        async move {
            contacts
                .list(pb::ListContactsRequest::default())
                .collect::<Vec<_>>()
                .await
        }
    });
    // Each is refused at least twice (so retried), or gives up.
    let tasks: [(&str, &str, f64, &dyn Finished); 2] = [
        ("the read", "GetContact", gets, &read),
        ("the list", "ListContacts", lists, &list),
    ];
    for (what, method, before, task) in tasks {
        eventually(PATIENCE, &format!("{what} is refused twice"), || async {
            let again = refused(&app, method).await - before >= 2.0;
            (again || task.finished()).then_some(())
        })
        .await;
        assert!(
            !task.finished(),
            "{what} gave up while the database was down"
        );
    }
    tokio::task::block_in_place(|| cluster.start());
    let got = tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the read is answered once the database is back")
        .expect("task")
        .expect("the read succeeds");
    assert_eq!(
        got, contact,
        "the read returns the contact, unchanged by the writes"
    );
    let listed = tokio::time::timeout(PATIENCE, list)
        .await
        .expect("the list is answered once the database is back")
        .expect("task");
    let ids: Vec<String> = listed
        .into_iter()
        .map(|item| item.expect("the list succeeds").id)
        .collect();
    assert_eq!(ids, vec![contact.id], "the one contact, once");
}
