//! Faults: the database going away under load, pool exhaustion, and callers that
//! cancel. `KRAITER_SOAK=1` runs more outages, for longer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::conformance;
use crate::support::cluster::TestCluster;
use crate::support::locks::{self, pool_goes_idle};
use crate::support::wait::{PATIENCE, eventually};
use crate::support::{
    Backend, Client, TestApp, assert_clean_message, assert_landed_whole_or_not_at_all, create,
    props, quiet_health, spawn_app_with,
};

pub fn soak() -> bool {
    std::env::var("KRAITER_SOAK").is_ok_and(|value| value == "1")
}

/// What the writers saw: acknowledged ids, and every failure with its duration.
#[derive(Default)]
struct Outcomes {
    acked: Vec<String>,
    failures: Vec<(Code, Duration, String)>,
}

/// Writers creating contacts until `stop`, each call with a 5 s client deadline.
fn spawn_writers(
    app: &TestApp,
    stop: &Arc<AtomicBool>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Outcomes>> {
    (0..n)
        .map(|w| {
            let mut client = app.client();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut out = Outcomes::default();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let mut request = tonic::Request::new(pb::CreateContactRequest {
                        email: format!("w{w}-{i}@example.com"),
                        properties: Some(props(json!({"writer": w, "n": i}))),
                        ..Default::default()
                    });
                    request.set_timeout(Duration::from_secs(5));
                    let started = Instant::now();
                    match client.create_contact(request).await {
                        Ok(response) => out.acked.push(response.into_inner().id),
                        Err(status) => {
                            let message = status.message().to_owned();
                            out.failures
                                .push((status.code(), started.elapsed(), message));
                            // Back off a little, as a client honouring RetryInfo would.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                out
            })
        })
        .collect()
}

/// Health statuses as the Watch stream reports them, in order.
fn watch_health(app: &TestApp) -> tokio::sync::mpsc::UnboundedReceiver<i32> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut health = HealthClient::new(app.channel.clone());
    tokio::spawn(async move {
        let mut watch = health
            .watch(HealthCheckRequest::default())
            .await
            .expect("watch health")
            .into_inner();
        while let Some(Ok(update)) = watch.next().await {
            if tx.send(update.status).is_err() {
                break;
            }
        }
    });
    rx
}

async fn wait_for_health(rx: &mut tokio::sync::mpsc::UnboundedReceiver<i32>, want: ServingStatus) {
    let wait = async {
        while let Some(status) = rx.recv().await {
            if status == want as i32 {
                return;
            }
        }
        panic!("the health watch ended before {want:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("health did not turn {want:?} within 30s"));
}

/// Every acknowledged contact is there, whole: listed, and with its creation entry.
async fn assert_all_readable(client: &mut Client, database_url: &str, acked: &[String]) {
    let mut listed = std::collections::HashSet::new();
    let mut stream = client
        .list_contacts(pb::ListContactsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    while let Some(page) = stream.message().await.expect("page") {
        listed.extend(page.contacts.into_iter().map(|c| c.id));
    }
    for id in acked {
        assert!(listed.contains(id), "acknowledged {id} lost");
    }
    // Nothing half-written: no contact without its `contact.created` entry.
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database_url)
        .await
        .expect("connect to check");
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contacts c WHERE NOT EXISTS (SELECT 1 FROM timeline_entries t \
         WHERE t.tenant_id = c.tenant_id AND t.contact_id = c.id AND t.type = 'contact.created')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count half-written contacts");
    assert_eq!(orphans, 0, "contacts without their creation entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_fails_fast_turns_health_and_loses_no_acknowledged_write() {
    let cluster = TestCluster::start_new();
    let acquire = Duration::from_secs(1);
    let app = spawn_app_with(Backend::Postgres, |args| {
        args.store.database_url = cluster.url("kraiter");
        args.store.db_max_connections = 4;
        args.store.db_acquire_timeout = acquire;
        args.health_interval = Duration::from_millis(100);
    })
    .await;
    let mut health = watch_health(&app);
    wait_for_health(&mut health, ServingStatus::Serving).await;
    let (outages, phase) = if soak() {
        (5, Duration::from_secs(5))
    } else {
        (1, Duration::from_millis(1500))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&app, &stop, 4);
    for _ in 0..outages {
        tokio::time::sleep(phase).await;
        tokio::task::block_in_place(|| cluster.stop());
        wait_for_health(&mut health, ServingStatus::NotServing).await;
        tokio::time::sleep(phase).await;
        tokio::task::block_in_place(|| cluster.start());
        // Recovers by itself: no restart of the service.
        wait_for_health(&mut health, ServingStatus::Serving).await;
    }
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failures = Vec::new();
    for writer in writers {
        let out = writer.await.expect("writer");
        acked.extend(out.acked);
        failures.extend(out.failures);
    }
    assert!(!failures.is_empty(), "the outage was felt");
    for (code, took, message) in &failures {
        assert_eq!(*code, Code::Unavailable, "{message}");
        // Fails fast: within the pool's acquire timeout (plus slack), not the deadline.
        assert!(
            *took < acquire + Duration::from_secs(2),
            "took {took:?}: {message}"
        );
        let status = tonic::Status::new(*code, message.clone());
        assert_clean_message(&status, &app.key, "an outage error");
    }
    let mut client = app.client();
    create(&mut client, "after-the-outage@example.com", json!({})).await;
    assert_all_readable(&mut client, &app.database_url, &acked).await;
    println!(
        "outage: {outages} outages survived, {} writes acknowledged and all read back, {} refused with UNAVAILABLE",
        acked.len(),
        failures.len()
    );
}

async fn more_callers_than_connections_wait_bounded_then_get_unavailable(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        args.store.db_max_connections = 2;
        args.store.db_acquire_timeout = Duration::from_millis(500);
        quiet_health(args);
    })
    .await;
    // What can write at once: both connections on PostgreSQL, SQLite's one writer.
    let writers = match backend {
        Backend::Postgres => 2,
        Backend::Sqlite => 1,
    };
    let mut client = app.client();
    let contact = create(&mut client, "hot@example.com", json!({"n": 0})).await;
    let lock = locks::hold(&app, &contact.id).await;
    let update = |n: i64| {
        let mut client = app.client();
        let id = contact.id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = client
                .update_contact(pb::UpdateContactRequest {
                    id,
                    email: None,
                    properties: Some(props(json!({ "n": n }))),
                    ..Default::default()
                })
                .await;
            (result.map(drop), started.elapsed())
        })
    };
    // Twenty callers: whichever take the connections that can write wait on the
    // lock; all the others queue for a connection, for a bounded time, and are
    // answered while the lock is still held (no deadlock).
    let mut callers: Vec<_> = (1..=20).map(update).collect();
    let others = callers.len() - writers;
    eventually(
        PATIENCE,
        "the callers without a connection are answered",
        || {
            let answered = callers.iter().filter(|task| task.is_finished()).count();
            async move { (answered >= others).then_some(()) }
        },
    )
    .await;
    let (answered, waiting): (Vec<_>, Vec<_>) =
        callers.drain(..).partition(|task| task.is_finished());
    assert_eq!(
        waiting.len(),
        writers,
        "only the callers holding the connections wait on the lock"
    );
    for task in answered {
        let (result, took) = task.await.expect("task");
        let status = result.expect_err("an update while the row is locked");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_clean_message(&status, &app.key, "pool exhausted");
        assert!(took < Duration::from_secs(3), "bounded wait: {took:?}");
    }
    lock.release().await;
    for task in waiting {
        let (result, _) = tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the lock holders finish")
            .expect("task");
        result.expect("a lock holder's update, once the lock is released");
    }
    pool_goes_idle(&app, Duration::from_secs(10), "after the exhaustion").await;
    create(&mut client, "after@example.com", json!({})).await;
}

async fn cancelled_calls_and_streams_stop_their_database_work(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        args.store.db_max_connections = 4;
        quiet_health(args);
    })
    .await;
    let mut client = app.client();
    for i in 0..60 {
        create(&mut client, &format!("c{i}@example.com"), json!({"i": i})).await;
    }
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    // Warm up the connection, then count the tasks that are always there.
    let mut warm = client
        .list_contacts(pb::ListContactsRequest::default())
        .await
        .expect("list")
        .into_inner();
    while warm.message().await.expect("page").is_some() {}
    pool_goes_idle(&app, Duration::from_secs(10), "before").await;
    let baseline = tasks();
    // Streams dropped after two pages of many.
    for _ in 0..20 {
        let mut stream = client
            .list_contacts(pb::ListContactsRequest {
                limit: 1,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        stream.message().await.expect("page").expect("page 1");
        stream.message().await.expect("page").expect("page 2");
        drop(stream);
    }
    pool_goes_idle(&app, Duration::from_secs(2), "after cancelled streams").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while tasks() > baseline + 2 {
        assert!(
            Instant::now() < deadline,
            "stream producers leaked: {} tasks, {baseline} before",
            tasks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A unary call cancelled while it waits in the database.
    let contact = create(&mut client, "cancel@example.com", json!({"v": 1})).await;
    let mut lock = locks::hold(&app, &contact.id).await;
    let mut canceller = app.client();
    let id = contact.id.clone();
    let call = tokio::spawn(async move {
        canceller
            .update_contact(pb::UpdateContactRequest {
                id,
                email: None,
                properties: Some(props(json!({"v": 2}))),
                ..Default::default()
            })
            .await
    });
    lock.wait_for_waiter(&app, "the update to cancel").await;
    call.abort();
    let _ = call.await;
    lock.release().await;
    pool_goes_idle(&app, Duration::from_secs(5), "after a cancelled update").await;
    assert_landed_whole_or_not_at_all(&mut client, &contact.id, json!({"v": 1}), json!({"v": 2}))
        .await;
}

conformance!(
    more_callers_than_connections_wait_bounded_then_get_unavailable,
    cancelled_calls_and_streams_stop_their_database_work,
);
