//! WatchContacts, the change feed: every kind of write appears once and in order,
//! a resume after any token gives exactly the rest, deletion scrubs the person from
//! earlier changes, the types filter, expired tokens, tenant isolation, watcher
//! limits, wake-up latency; and on PostgreSQL, ordering under concurrent writers
//! with a transaction held open.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kraiter_contacts::client::pb;
use kraiter_contacts::client::pb::ContactChangeType as Kind;
use serde_json::json;
use sqlx::Connection;
use tonic::Code;

use super::import::{batch, import, row};
use crate::conformance;
use crate::support::cluster::TestCluster;
use crate::support::wait::PATIENCE;
use crate::support::{
    Backend, Client, TestApp, assert_status, create, locks, props, spawn_app, spawn_app_with,
};
use kraiter_contacts::api::pb::ImportMode::Upsert;

fn from_oldest(max_changes: i32) -> pb::WatchContactsRequest {
    pb::WatchContactsRequest {
        start: pb::WatchStart::OldestRetained as i32,
        max_changes,
        ..Default::default()
    }
}

fn resume(token: &str, max_changes: i32) -> pb::WatchContactsRequest {
    pb::WatchContactsRequest {
        resume_token: token.to_owned(),
        max_changes,
        ..Default::default()
    }
}

/// The changes a watch with `max_changes` set delivers, all of them.
async fn collect(client: &mut Client, request: pb::WatchContactsRequest) -> Vec<pb::ContactChange> {
    let expected = request.max_changes as usize;
    let mut stream = client
        .watch_contacts(request)
        .await
        .expect("watch")
        .into_inner();
    let mut changes = Vec::new();
    while changes.len() < expected {
        let next = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {expected} changes arrived: {changes:?}",
                    changes.len()
                )
            });
        match next.expect("a change") {
            Some(change) => changes.push(change),
            None => break,
        }
    }
    changes
}

/// Imports `n` new contacts `{prefix}{i}@example.com` (i zero-padded to the width of
/// `n - 1`), each with `{"n": i}`, in one batch; how many it created.
async fn import_numbered(client: &mut Client, prefix: &str, n: usize) -> i64 {
    let width = (n - 1).to_string().len();
    let rows = (0..n)
        .map(|i| row(&format!("{prefix}{i:0width$}@example.com"), json!({"n": i})))
        .collect();
    let answers = import(client, vec![batch(Upsert, rows)])
        .await
        .expect("import");
    answers.iter().map(|answer| answer.created).sum()
}

/// A watch resumed after each of `all[at]` for `at` in `ats` gives exactly the
/// changes after it.
async fn resumes_give_the_tail(
    client: &mut Client,
    all: &[pb::ContactChange],
    ats: &[usize],
    backend: Backend,
) {
    for &at in ats {
        let want = all.len() - at - 1;
        let tail = collect(client, resume(&all[at].token, want as i32)).await;
        let got: Vec<&String> = tail.iter().map(|c| &c.token).collect();
        let expected: Vec<&String> = all[at + 1..].iter().map(|c| &c.token).collect();
        assert_eq!(got, expected, "{backend:?}: resumed after change {at}");
    }
}

fn kinds(changes: &[pb::ContactChange]) -> Vec<Kind> {
    changes
        .iter()
        .map(|c| Kind::try_from(c.r#type).expect("a known type"))
        .collect()
}

/// Create, update, upsert (create and merge), auto-create by email, suppression by a
/// bounce, unsubscription, delete: nine changes, in this order.
async fn every_kind_of_write(app: &TestApp) -> String {
    let mut client = app.client();
    let mut activity = app.activity();
    let alice = create(&mut client, "alice@example.com", json!({"plan": "free"})).await;
    client
        .update_contact(pb::UpdateContactRequest {
            id: alice.id.clone(),
            properties: Some(props(json!({"plan": "pro"}))),
            ..Default::default()
        })
        .await
        .expect("update");
    for plan in ["a", "b"] {
        client
            .upsert_contact(pb::UpsertContactRequest {
                email: "bob@example.com".into(),
                properties: Some(props(json!({ "plan": plan }))),
                ..Default::default()
            })
            .await
            .expect("upsert");
    }
    let send = activity
        .record_send(pb::RecordSendRequest {
            recipient: Some(pb::record_send_request::Recipient::Email(
                "carol@example.com".into(),
            )),
            template_id: "t".into(),
            status: pb::SendStatus::Sent as i32,
            source: pb::SendSource::Transactional as i32,
            ..Default::default()
        })
        .await
        .expect("record a send to a new address")
        .into_inner();
    activity
        .update_send_status(pb::UpdateSendStatusRequest {
            send_id: send.id,
            status: pb::SendStatus::Bounced as i32,
            ..Default::default()
        })
        .await
        .expect("bounce");
    activity
        .track_event(pb::TrackEventRequest {
            subject: Some(pb::track_event_request::Subject::ContactId(
                alice.id.clone(),
            )),
            name: "email.unsubscribed".into(),
            ..Default::default()
        })
        .await
        .expect("unsubscribe");
    client
        .delete_contact(pb::DeleteContactRequest {
            id: alice.id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete");
    alice.id
}

async fn every_write_kind_appears_once_in_order_and_a_resume_gives_exactly_the_rest(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let alice = every_kind_of_write(&app).await;
    let mut client = app.client();
    let all = collect(&mut client, from_oldest(8)).await;
    assert_eq!(
        kinds(&all),
        [
            Kind::Created,
            Kind::Updated,
            Kind::Created,
            Kind::Updated,
            Kind::Created,
            Kind::Suppressed,
            Kind::Unsubscribed,
            Kind::Deleted,
        ],
        "{backend:?}: {all:?}"
    );
    assert_eq!(all.len(), 8, "{backend:?}: eight changes");
    let bob = &all[3];
    assert_eq!(bob.changed_fields, ["properties.plan"], "{backend:?}");
    let merged = bob.contact.as_ref().expect("the contact after the merge");
    assert_eq!(merged.email, "bob@example.com");
    assert_eq!(
        all[5].changed_fields,
        ["suppressed"],
        "{backend:?}: the bounce"
    );
    assert!(all[5].contact.as_ref().is_some_and(|c| c.suppressed));
    // Deleted: only the id, here and in every earlier change of alice.
    assert_eq!(all[7].contact_id, alice);
    for change in all.iter().filter(|c| c.contact_id == alice) {
        assert!(change.contact.is_none(), "{backend:?}: scrubbed {change:?}");
        assert!(change.changed_fields.is_empty(), "{backend:?}: {change:?}");
    }
    // Resuming after each token gives exactly the changes after it.
    for (i, change) in all.iter().enumerate() {
        let rest = all.len() - i - 1;
        if rest == 0 {
            continue;
        }
        let resumed = collect(&mut client, resume(&change.token, rest as i32)).await;
        let ids: Vec<&str> = resumed.iter().map(|c| c.token.as_str()).collect();
        let want: Vec<&str> = all[i + 1..].iter().map(|c| c.token.as_str()).collect();
        assert_eq!(ids, want, "{backend:?}: resumed after change {i}");
    }
}

async fn the_types_filter_keeps_only_those_changes(backend: Backend) {
    let app = spawn_app(backend).await;
    every_kind_of_write(&app).await;
    let mut request = from_oldest(3);
    request.types = vec![Kind::Created as i32];
    let created = collect(&mut app.client(), request).await;
    assert_eq!(kinds(&created), [Kind::Created; 3], "{backend:?}");
    let mut bad = from_oldest(1);
    bad.types = vec![99];
    let refused = app.client().watch_contacts(bad).await;
    assert_status(
        refused.map(drop),
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "type 99",
    );
}

async fn a_watcher_sees_a_new_change_well_under_a_second(backend: Backend) {
    // On a cluster of its own: a transaction another test holds open anywhere in a
    // cluster holds back every delivery in it (the xmin horizon).
    let cluster = (backend == Backend::Postgres).then(TestCluster::start_new);
    let app = spawn_app_with(backend, |args| {
        if let Some(cluster) = &cluster {
            args.store.database_url = cluster.url("kraiter");
        }
    })
    .await;
    let mut stream = app
        .client()
        .watch_contacts(pb::WatchContactsRequest::default())
        .await
        .expect("watch from now")
        .into_inner();
    // Let the watch reach its wait before the write.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    create(&mut app.client(), "late@example.com", json!({})).await;
    let change = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a change in time")
        .expect("no error")
        .expect("a change");
    let latency = began.elapsed();
    assert_eq!(change.r#type, Kind::Created as i32);
    assert!(
        latency < Duration::from_millis(700),
        "{backend:?}: delivered after {latency:?}"
    );
    println!("{backend:?}: create to watcher in {latency:?}");
}

async fn a_token_older_than_the_retention_is_expired_never_a_gap(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        args.limits.change_retention = Duration::from_secs(5);
        // The purge takes every tenant's old changes: not those of other tests.
        if backend == Backend::Postgres {
            args.store.database_url = crate::support::postgres::own_database();
        }
    })
    .await;
    let mut client = app.client();
    create(&mut client, "first@example.com", json!({})).await;
    create(&mut client, "second@example.com", json!({})).await;
    let first = collect(&mut client, from_oldest(1)).await.remove(0);
    // Once both are purged, the token after the first has lost the second.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let resumed = client.watch_contacts(resume(&first.token, 1)).await;
        if resumed.is_err() {
            let what = format!("{backend:?}: an expired token");
            assert_status(
                resumed.map(drop),
                Code::FailedPrecondition,
                "RESUME_TOKEN_EXPIRED",
                &what,
            );
            break;
        }
        assert!(Instant::now() < deadline, "{backend:?}: never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The oldest retained start works, and sees the next write.
    create(&mut client, "third@example.com", json!({})).await;
    let next = collect(&mut client, from_oldest(1)).await;
    assert_eq!(
        next[0].contact.as_ref().map(|c| c.email.as_str()),
        Some("third@example.com")
    );
}

async fn a_watcher_sees_only_its_tenant_and_a_token_works_only_for_it(backend: Backend) {
    let app = spawn_app(backend).await;
    create(&mut app.client(), "mine@example.com", json!({})).await;
    let token = collect(&mut app.client(), from_oldest(1))
        .await
        .remove(0)
        .token;
    let mut other = app.other_tenant_client().await;
    create(&mut other, "theirs@example.com", json!({})).await;
    let theirs = collect(&mut other, from_oldest(1)).await;
    assert_eq!(
        theirs[0].contact.as_ref().map(|c| c.email.as_str()),
        Some("theirs@example.com"),
        "{backend:?}"
    );
    let refused = other.watch_contacts(resume(&token, 1)).await;
    assert_status(
        refused.map(drop),
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "a's token",
    );
}

async fn watchers_past_the_tenant_limit_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, |args| args.limits.max_watchers_per_tenant = 1).await;
    let first = app
        .client()
        .watch_contacts(pb::WatchContactsRequest::default())
        .await
        .expect("the first watcher");
    let second = app
        .client()
        .watch_contacts(pb::WatchContactsRequest::default())
        .await;
    assert_status(
        second.map(drop),
        Code::ResourceExhausted,
        "RATE_LIMITED",
        "second",
    );
    // Another tenant has places of its own; a list is not a watcher.
    let mut other = app.other_tenant_client().await;
    other
        .watch_contacts(pb::WatchContactsRequest::default())
        .await
        .expect("another tenant's watcher");
    drop(first);
    crate::support::wait::eventually(PATIENCE, "a place given back", || {
        let mut client = app.client();
        async move {
            client
                .watch_contacts(pb::WatchContactsRequest::default())
                .await
                .ok()
        }
    })
    .await;
}

async fn watchers_past_the_server_limit_are_refused_whatever_the_tenant(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        args.limits.max_watchers = 2;
        args.limits.max_watchers_per_tenant = 2;
    })
    .await;
    let watch = || pb::WatchContactsRequest::default();
    let mut a = app.client();
    let mut b = app.other_tenant_client().await;
    let mut c = app.other_tenant_client().await;
    let first = a.watch_contacts(watch()).await.expect("A's watcher");
    let second = b.watch_contacts(watch()).await.expect("B's watcher");
    let third = c.watch_contacts(watch()).await;
    let status = assert_status(
        third.map(drop),
        Code::ResourceExhausted,
        "RATE_LIMITED",
        "a third tenant past the server's two watchers",
    );
    assert!(
        tonic_types::StatusExt::get_details_retry_info(&status).is_some(),
        "with RetryInfo: {status:?}"
    );
    // Lists are counted apart: C still lists.
    let listed = c.list_contacts(pb::ListContactsRequest::default()).await;
    assert!(listed.is_ok(), "a list is not a watcher: {listed:?}");
    drop((first, second));
    crate::support::wait::eventually(PATIENCE, "places given back", || {
        let mut c = c.clone();
        async move { c.watch_contacts(watch()).await.ok() }
    })
    .await;
}

async fn the_client_watch_resumes_after_its_last_token(backend: Backend) {
    let app = spawn_app(backend).await;
    every_kind_of_write(&app).await;
    let contacts = app.sdk().contacts();
    let first: Vec<pb::ContactChange> = contacts
        .watch(from_oldest(3))
        .map(|c| c.expect("a change"))
        .collect()
        .await;
    let rest: Vec<pb::ContactChange> = contacts
        .watch(resume(&first[2].token, 5))
        .map(|c| c.expect("a change"))
        .collect()
        .await;
    let all = collect(&mut app.client(), from_oldest(8)).await;
    let tokens: Vec<&String> = first.iter().chain(&rest).map(|c| &c.token).collect();
    let want: Vec<&String> = all.iter().map(|c| &c.token).collect();
    assert_eq!(tokens, want, "{backend:?}");
}

/// An import's rows appear like single writes: a created contact once (with its
/// final state, however many rows of the batch touched it), an updated one once, an
/// unchanged row not at all.
async fn imported_rows_appear_in_the_feed(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let existing = create(&mut client, "old@example.com", json!({"plan": "free"})).await;
    let first = collect(&mut client, from_oldest(1)).await;
    let row = |email: &str, value: serde_json::Value| pb::ImportRow {
        email: email.to_owned(),
        properties: Some(props(value)),
    };
    let batch = pb::ImportContactsRequest {
        rows: vec![
            row("new@example.com", json!({"a": 1})),
            row("NEW@example.com", json!({"b": 2})),
            row("old@example.com", json!({"plan": "pro"})),
            row("old@example.com", json!({"plan": "pro"})),
        ],
        mode: pb::ImportMode::Upsert as i32,
    };
    let mut responses = client
        .import_contacts(tokio_stream::iter([batch]))
        .await
        .expect("import")
        .into_inner();
    let answer = responses
        .message()
        .await
        .expect("answer")
        .expect("one batch");
    assert_eq!((answer.created, answer.updated), (1, 2), "rows: {answer:?}");
    let changes = collect(&mut client, resume(&first[0].token, 2)).await;
    assert_eq!(
        kinds(&changes),
        [Kind::Created, Kind::Updated],
        "{changes:?}"
    );
    let created = changes[0].contact.as_ref().expect("the new contact");
    assert_eq!(created.email, "new@example.com");
    assert_eq!(
        crate::support::json_of(created),
        json!({"a": 1, "b": 2}),
        "the state the batch left"
    );
    assert_eq!(changes[1].contact_id, existing.id);
    assert_eq!(changes[1].changed_fields, ["properties.plan"]);
}

/// A token resumes on another server of the same database, and after the first is
/// gone: the feed lives in the database, not in a process.
async fn a_watch_resumes_on_another_server_and_after_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().expect("a directory");
    let url = match backend {
        Backend::Postgres => crate::support::postgres::own_database(),
        Backend::Sqlite => format!("sqlite://{}/feed.db", dir.path().display()),
    };
    let on = |url: String| {
        move |args: &mut kraiter_contacts::config::ServeArgs| {
            args.store.database_url = url;
        }
    };
    let first = spawn_app_with(backend, on(url.clone())).await;
    let key = first.key.clone();
    let mut client = first.client();
    for n in 0..4 {
        create(&mut client, &format!("r{n}@example.com"), json!({"n": n})).await;
    }
    let head = collect(&mut client, from_oldest(2)).await;
    let email = |change: &pb::ContactChange| {
        change
            .contact
            .as_ref()
            .map(|c| c.email.clone())
            .unwrap_or_default()
    };

    // Another server on the same database, the first still up.
    let second = spawn_app_with(backend, on(url.clone())).await;
    let mut elsewhere = second.client_with_key(Some(&key));
    let rest = collect(&mut elsewhere, resume(&head[1].token, 2)).await;
    let emails: Vec<String> = rest.iter().map(email).collect();
    assert_eq!(
        emails,
        ["r2@example.com", "r3@example.com"],
        "{backend:?}: on another server"
    );

    // Both gone; writes, then a new server resumes from the last token received.
    let last = rest[1].token.clone();
    drop((client, elsewhere, first, second));
    let third = spawn_app_with(backend, on(url.clone())).await;
    let mut client = third.client_with_key(Some(&key));
    create(&mut client, "after@example.com", json!({})).await;
    let after = collect(&mut client, resume(&last, 1)).await;
    assert_eq!(after.len(), 1, "{backend:?}");
    assert_eq!(
        email(&after[0]),
        "after@example.com",
        "{backend:?}: after a restart"
    );
}

conformance!(
    reads_cut_at_their_byte_budget_lose_nothing,
    many_watchers_sharing_reads_each_get_every_change_in_order,
    a_long_backlog_arrives_whole_and_resumes_anywhere_in_it,
    a_paused_watcher_holds_bounded_server_memory,
    watchers_past_the_server_limit_are_refused_whatever_the_tenant,
    a_watch_resumes_on_another_server_and_after_a_restart,
    imported_rows_appear_in_the_feed,
    every_write_kind_appears_once_in_order_and_a_resume_gives_exactly_the_rest,
    the_types_filter_keeps_only_those_changes,
    a_watcher_sees_a_new_change_well_under_a_second,
    a_token_older_than_the_retention_is_expired_never_a_gap,
    a_watcher_sees_only_its_tenant_and_a_token_works_only_for_it,
    watchers_past_the_tenant_limit_are_refused,
    the_client_watch_resumes_after_its_last_token,
);

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

/// A watcher that stops reading holds bounded server memory: the server reads the
/// outbox in batches bounded in bytes (512 KiB plus one change), holds at most the
/// batch it sends and one read ahead, keeps at most two chunks of them (64 KiB
/// encoded, plus one change, each) for the client, and HTTP/2 flow control stops it
/// sending. (On PostgreSQL this test found the feed skipping
/// changes once transaction ids gained a digit: its batch was sorted by the id as
/// text; then every change must still arrive.) 600 changes carrying contacts of ~48 KB (~29 MB) stand
/// behind a watcher that took one and paused; measured on the real binary.
async fn a_paused_watcher_holds_bounded_server_memory(backend: Backend) {
    let app = spawn_app(backend).await;
    let server = crate::support::replica::Replica::start(&app.database_url, &[]);
    let mut writer = app.client();
    let filler = "x".repeat(48_000);
    for n in 0..600 {
        create(
            &mut writer,
            &format!("big{n:03}@example.com"),
            json!({"filler": filler}),
        )
        .await;
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect to the server process");
    let mut watcher =
        kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient::new(channel)
            .max_decoding_message_size(1 << 20);
    let before = server.rss_kib();
    let mut request = tonic::Request::new(from_oldest(600));
    let value = format!("Bearer {}", app.key).parse().expect("metadata");
    request.metadata_mut().insert("authorization", value);
    let mut stream = watcher
        .watch_contacts(request)
        .await
        .expect("watch")
        .into_inner();
    stream
        .message()
        .await
        .expect("a change")
        .expect("the first change");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = server.rss_kib();
    let grown = during.saturating_sub(before);
    println!("paused watcher: the server grew by {grown} KiB while 599 changes of ~48 KB waited");
    assert!(
        grown < 24 * 1024,
        "{backend:?}: a paused watcher grew the server by {grown} KiB"
    );
    let mut seen = 1;
    while seen < 600 {
        match tokio::time::timeout(PATIENCE, stream.message()).await {
            Ok(Ok(Some(_))) => seen += 1,
            other => panic!("{backend:?}: after {seen} changes: {other:?}"),
        }
    }
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

/// A backlog of many batches (the feed reads the next batch while it sends one):
/// 1,000 imported contacts arrive once each, and a resume from a token inside the
/// backlog, where batches are cut elsewhere, gives exactly the same tail; a watch
/// that asks for fewer ends after them.
async fn a_long_backlog_arrives_whole_and_resumes_anywhere_in_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let created = import_numbered(&mut client, "backlog", 1000).await;
    assert_eq!(created, 1000, "{backend:?}");
    let all = collect(&mut client, from_oldest(1000)).await;
    let ids: std::collections::HashSet<&String> = all.iter().map(|c| &c.contact_id).collect();
    assert_eq!(
        (all.len(), ids.len()),
        (1000, 1000),
        "{backend:?}: once each"
    );
    resumes_give_the_tail(&mut client, &all, &[99, 100, 437], backend).await;
    let mut few = client
        .watch_contacts(from_oldest(150))
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    let mut count = 0;
    while let Some(change) = tokio::time::timeout(PATIENCE, few.message())
        .await
        .expect("the watch ends after 150")
        .expect("a change")
    {
        count += 1;
        last = Some(change.token);
    }
    assert_eq!(count, 150, "{backend:?}");
    assert_eq!(last.as_ref(), Some(&all[149].token), "{backend:?}");
}

/// A backlog of small changes and then large ones: the feed sizes its reads to the
/// small ones (hundreds of rows), so the reads that meet the large ones stop at their
/// byte budget with rows still unread (the connection is given back only after
/// they are drained). Every change still arrives once, in order, and a resume from
/// inside the large ones, where reads are cut elsewhere, gives exactly the same tail.
async fn reads_cut_at_their_byte_budget_lose_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let created = import_numbered(&mut client, "small", 400).await;
    assert_eq!(created, 400, "{backend:?}");
    let filler = "y".repeat(30_000);
    for n in 0..60 {
        create(
            &mut client,
            &format!("large{n:02}@example.com"),
            json!({"n": n, "filler": filler}),
        )
        .await;
    }
    let all = collect(&mut client, from_oldest(460)).await;
    let emails: Vec<String> = all
        .iter()
        .map(|c| c.contact.as_ref().expect("a contact").email.clone())
        .collect();
    let expected: Vec<String> = (0..400)
        .map(|n| format!("small{n:03}@example.com"))
        .chain((0..60).map(|n| format!("large{n:02}@example.com")))
        .collect();
    assert_eq!(emails, expected, "{backend:?}: every change once, in order");
    resumes_give_the_tail(&mut client, &all, &[405, 431], backend).await;
}

/// Watchers of one tenant in one process share their reads of the feed when they
/// wait at the same position (`SharedReads`); each must still get every change once,
/// in order: 12 watchers beside 4 concurrent writers all see the sequence a watch
/// started afterwards reads from the database.
async fn many_watchers_sharing_reads_each_get_every_change_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let first = create(&mut client, "first@example.com", json!({})).await;
    let start = collect(&mut client, from_oldest(1)).await.remove(0).token;
    assert!(!first.id.is_empty());
    let watchers: Vec<_> = (0..12)
        .map(|_| {
            let mut client = app.client();
            let request = resume(&start, 60);
            tokio::spawn(async move { collect(&mut client, request).await })
        })
        .collect();
    // Every watch is open (and waiting at the start) before the writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = app.client();
            tokio::spawn(async move {
                for i in 0..15 {
                    create(&mut client, &format!("s{w}-{i}@example.com"), json!({})).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    let reference: Vec<String> = collect(&mut client, resume(&start, 60))
        .await
        .into_iter()
        .map(|c| c.token)
        .collect();
    assert_eq!(reference.len(), 60, "{backend:?}");
    for watcher in watchers {
        let got: Vec<String> = watcher
            .await
            .expect("a watcher")
            .into_iter()
            .map(|c| c.token)
            .collect();
        assert_eq!(got, reference, "{backend:?}: a watcher's sequence");
    }
}
