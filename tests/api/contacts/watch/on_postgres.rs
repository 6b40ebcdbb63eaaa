//! WatchContacts on PostgreSQL only: ordering under concurrent writers with a
//! transaction held open, transaction ids across a digit boundary, and an outage.

use super::*;

/// Many concurrent writers while one transaction that took its id first is held
/// open: the watcher delivers nothing that commits after it until it ends, and in
/// the end every change exactly once, in the (xid, seq) order of the outbox, the
/// held one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_a_held_transaction_never_reorder_the_feed() {
    // Its own cluster: the transaction it holds open would delay other tests' feeds.
    let cluster = TestCluster::start_new();
    let app = spawn_app_with(Backend::Postgres, |args| {
        args.store.database_url = cluster.url("kraiter");
    })
    .await;
    let mut client = app.client();
    let held = create(&mut client, "held@example.com", json!({})).await;
    let mut db = sqlx::PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let tenant: String = sqlx::query_scalar("SELECT tenant_id FROM contacts WHERE id = $1")
        .bind(&held.id)
        .fetch_one(&mut db)
        .await
        .expect("the tenant");
    let start = collect(&mut client, from_oldest(1)).await.remove(0).token;

    // An update of `held` that takes its transaction id, then waits on the row lock
    // the test holds while others commit.
    let mut lock = locks::hold(&app, &held.id).await;
    let mut updater = app.client();
    let id = held.id.clone();
    let blocked = tokio::spawn(async move {
        updater
            .update_contact(pb::UpdateContactRequest {
                id,
                properties: Some(props(json!({"v": 1}))),
                ..Default::default()
            })
            .await
    });
    lock.wait_for_waiter(&app, "the held update").await;
    let watcher = app.sdk().contacts().watch(resume(&start, 0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut client = app.client();
            tokio::spawn(async move {
                for i in 0..5 {
                    create(
                        &mut client,
                        &format!("w{w}-{i}@example.com"),
                        json!({"i": i}),
                    )
                    .await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    let mut watcher = watcher;
    let early = tokio::time::timeout(Duration::from_millis(500), watcher.next()).await;
    assert!(
        early.is_err(),
        "nothing is delivered past the open transaction: {early:?}"
    );
    lock.release().await;
    blocked.await.expect("the update task").expect("the update");
    let mut delivered = Vec::new();
    while delivered.len() < 41 {
        let change = tokio::time::timeout(PATIENCE, watcher.next())
            .await
            .expect("changes keep coming")
            .expect("the watch goes on")
            .expect("a change");
        delivered.push((change.contact_id, change.r#type));
    }
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT contact_id, type FROM contact_changes WHERE tenant_id = $1 \
         ORDER BY xid, seq OFFSET 1",
    )
    .bind(&tenant)
    .fetch_all(&mut db)
    .await
    .expect("the outbox");
    let committed: Vec<(String, i32)> = rows
        .into_iter()
        .map(|(id, kind)| {
            let kind = match kind.as_str() {
                "CREATED" => Kind::Created,
                _ => Kind::Updated,
            };
            (id, kind as i32)
        })
        .collect();
    assert_eq!(
        delivered, committed,
        "the feed is the outbox in (xid, seq) order"
    );
    assert!(
        delivered
            .iter()
            .any(|(id, kind)| *id == held.id && *kind == Kind::Updated as i32),
        "the held update is delivered"
    );
    let extra = tokio::time::timeout(Duration::from_millis(300), watcher.next()).await;
    assert!(extra.is_err(), "nothing more: {extra:?}");
}

/// Positions order by the transaction id as a number: a batch of changes whose ids
/// cross a power of ten (99 to 100) comes in numeric order, none skipped. (Sorted as
/// text, "100".."199" came before "50".."99" and the batch cut skipped the latter.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_come_in_numeric_id_order_across_a_digit_boundary() {
    let url = crate::support::postgres::own_database();
    let app = spawn_app_with(Backend::Postgres, |args| {
        args.store.database_url = url.clone()
    })
    .await;
    let mut client = app.client();
    let seed = create(&mut client, "seed@example.com", json!({})).await;
    let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
    let tenant: String = sqlx::query_scalar("SELECT tenant_id FROM contacts WHERE id = $1")
        .bind(&seed.id)
        .fetch_one(&mut db)
        .await
        .expect("the tenant");
    // Old, committed transaction ids, below any the cluster hands out now.
    sqlx::query(
        "INSERT INTO contact_changes (tenant_id, xid, type, contact_id, occurred_at) \
         SELECT $1, g::text::xid8, 'DELETED', 'con_' || lpad(g::text, 26, '0'), now() \
         FROM generate_series(50, 199) g",
    )
    .bind(&tenant)
    .execute(&mut db)
    .await
    .expect("changes with ids across 99 -> 100");
    let changes = collect(&mut client, from_oldest(151)).await;
    let ids: Vec<&str> = changes.iter().map(|c| c.contact_id.as_str()).collect();
    let want: Vec<String> = (50..200).map(|g| format!("con_{g:026}")).collect();
    assert_eq!(ids.len(), 151, "every change, the seed's last");
    assert_eq!(
        &ids[..150],
        want.as_slice(),
        "in numeric order of their ids"
    );
    assert_eq!(ids[150], seed.id);
}

/// A PostgreSQL outage under writers and watchers: the server's own watch stream ends
/// with UNAVAILABLE (it does not wait out the outage: the client resumes), writes
/// during the outage fail with a clean UNAVAILABLE, and the Rust client's `watch`,
/// whose retry policy outlasts the outage, reopens after its last token and delivers
/// every committed change once, in the outbox's (xid, seq) order, every acknowledged
/// write among them. (With the default policy, 5 retries, the client gives up on an
/// outage longer than its backoff and returns the UNAVAILABLE; a caller then resumes
/// with the last token it kept.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_after_a_postgres_restart_with_every_change_once_in_order() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use kraiter_contacts::client::RetryPolicy;

    // Its own cluster: the shared one must stay up.
    let cluster = TestCluster::start_new();
    let app = spawn_app_with(Backend::Postgres, |args| {
        args.store.database_url = cluster.url("kraiter");
        args.store.db_max_connections = 4;
        args.store.db_acquire_timeout = Duration::from_secs(1);
        args.health_interval = Duration::from_millis(100);
    })
    .await;
    let mut client = app.client();
    let first = create(&mut client, "before@example.com", json!({})).await;

    // The client's watch, from the oldest change, retrying for longer than the outage.
    let sdk = app.sdk().with_retry(RetryPolicy {
        max_retries: 200,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(250),
    });
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = tokio::spawn(async move {
        let mut changes = sdk.contacts().watch(from_oldest(0));
        while let Some(change) = changes.next().await {
            let failed = change.is_err();
            if seen_tx.send(change).is_err() || failed {
                break;
            }
        }
    });
    // The server's own stream, read raw: how it ends when the database goes.
    let mut raw = client
        .watch_contacts(from_oldest(0))
        .await
        .expect("a raw watch")
        .into_inner();
    let raw_first = tokio::time::timeout(PATIENCE, raw.message())
        .await
        .expect("the raw watch's first change")
        .expect("a change")
        .expect("not the end");
    assert_eq!(raw_first.contact_id, first.id);
    let raw_end = tokio::spawn(async move {
        let mut last = (raw_first.token, raw_first.contact_id);
        loop {
            match raw.message().await {
                Ok(Some(change)) => last = (change.token, change.contact_id),
                Ok(None) => return (None, last),
                Err(status) => return (Some(status), last),
            }
        }
    });

    // Writers through the outage: what they were told, per call.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let mut client = app.client();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut acked, mut failed) = (Vec::new(), Vec::new());
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let mut request = tonic::Request::new(pb::CreateContactRequest {
                        email: format!("w{w}-{i}@example.com"),
                        properties: Some(props(json!({"w": w, "i": i}))),
                        ..Default::default()
                    });
                    request.set_timeout(Duration::from_secs(5));
                    match client.create_contact(request).await {
                        Ok(response) => acked.push(response.into_inner().id),
                        Err(status) => {
                            failed.push(status);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                (acked, failed)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| cluster.stop());
    let stopped = Instant::now();
    let (raw_status, raw_last) = tokio::time::timeout(PATIENCE, raw_end)
        .await
        .expect("the raw watch ends during the outage")
        .expect("the raw reader");
    let raw_status = raw_status.expect("the raw watch ends with a status, not a clean end");
    assert_eq!(
        raw_status.code(),
        Code::Unavailable,
        "the server's stream: {raw_status:?}"
    );
    crate::support::assert_clean_message(&raw_status, &app.key, "the watch's outage status");
    println!(
        "outage: the server's watch ended with UNAVAILABLE {:?} after pg_ctl stop returned",
        stopped.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| cluster.start());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut failures) = (Vec::new(), Vec::new());
    for writer in writers {
        let (a, f) = writer.await.expect("a writer");
        acked.extend(a);
        failures.extend(f);
    }
    assert!(!failures.is_empty(), "the outage was felt by the writers");
    for status in &failures {
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "a write during the outage: {status:?}"
        );
        crate::support::assert_clean_message(status, &app.key, "a write's outage status");
    }
    let last = create(&mut client, "after@example.com", json!({})).await;

    // The client's watch delivers up to the last write, then the outbox is compared.
    let mut delivered: Vec<pb::ContactChange> = Vec::new();
    while delivered.last().is_none_or(|c| c.contact_id != last.id) {
        let change = tokio::time::timeout(PATIENCE, seen_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{} changes, then nothing", delivered.len()))
            .expect("the watch goes on")
            .expect("the client's watch outlasts the outage");
        delivered.push(change);
    }
    watcher.abort();
    let mut db = sqlx::PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let tenant: String = sqlx::query_scalar("SELECT tenant_id FROM contacts WHERE id = $1")
        .bind(&first.id)
        .fetch_one(&mut db)
        .await
        .expect("the tenant");
    let committed: Vec<String> = sqlx::query_scalar(
        "SELECT contact_id FROM contact_changes WHERE tenant_id = $1 ORDER BY xid, seq",
    )
    .bind(&tenant)
    .fetch_all(&mut db)
    .await
    .expect("the outbox");
    let ids: Vec<String> = delivered.iter().map(|c| c.contact_id.clone()).collect();
    assert_eq!(
        ids, committed,
        "the client's watch is the outbox in commit order, each change once"
    );
    assert!(
        kinds(&delivered).iter().all(|k| *k == Kind::Created),
        "only creates were written"
    );
    let delivered_ids: std::collections::HashSet<&String> = ids.iter().collect();
    for id in &acked {
        assert!(
            delivered_ids.contains(id),
            "acknowledged {id} not delivered"
        );
    }
    // The raw stream's last token resumes on the restarted database like the client.
    let after_raw = collect(&mut client, resume(&raw_last.0, 1)).await;
    let at = ids
        .iter()
        .position(|id| *id == raw_last.1)
        .expect("the raw stream's last change was delivered");
    assert_eq!(
        after_raw[0].contact_id,
        ids[at + 1],
        "resuming the raw stream gives the change after its last one"
    );
    println!(
        "outage: {} writes acknowledged, {} refused with UNAVAILABLE, {} changes delivered once in order",
        acked.len(),
        failures.len(),
        delivered.len()
    );
}
