//! WatchContacts, the change feed: every kind of write appears once and in order,
//! a resume after any token gives exactly the rest, deletion scrubs the person from
//! earlier changes, the types filter, expired tokens, tenant isolation, watcher
//! wake-up latency; watcher limits (`limits.rs`); and on PostgreSQL, ordering under concurrent writers
//! with a transaction held open (`on_postgres.rs`); long backlogs, byte budgets, many
//! and paused watchers (`volume.rs`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kraiter_contacts::client::pb;
use kraiter_contacts::client::pb::ContactChangeType as Kind;
use serde_json::json;
use sqlx::Connection;
use tonic::Code;

use crate::conformance;
use crate::support::cluster::TestCluster;
use crate::support::imports::{batch, import, row};
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
    a_watch_resumes_on_another_server_and_after_a_restart,
    imported_rows_appear_in_the_feed,
    every_write_kind_appears_once_in_order_and_a_resume_gives_exactly_the_rest,
    the_types_filter_keeps_only_those_changes,
    a_watcher_sees_a_new_change_well_under_a_second,
    a_token_older_than_the_retention_is_expired_never_a_gap,
    a_watcher_sees_only_its_tenant_and_a_token_works_only_for_it,
    the_client_watch_resumes_after_its_last_token,
);

mod limits;
mod on_postgres;
mod volume;
