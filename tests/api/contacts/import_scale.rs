//! ImportContacts at size, under contention and cancellation: 100k rows through the
//! Rust client, concurrent imports of the same addresses, and an import that goes
//! away with a batch in flight.

use std::time::Duration;

use futures_util::StreamExt;
use kraiter_contacts::api::pb;
use serde_json::json;

use crate::conformance;
use crate::support::imports::{batch, import, import_ended, open_import, outcomes, row};
use crate::support::locks::{hold, pool_goes_idle};
use crate::support::{
    Backend, create, json_of, pages, props, quiet_health, spawn_app, spawn_app_with,
};

/// Two imports of the same 600 addresses, one in the opposite order of the other
/// and each setting a key of its own: one contact per address, created once, with
/// both keys, and no error on either side (locks are taken in address order; a lost
/// race for a new address runs the batch again).
async fn concurrent_imports_of_the_same_addresses_make_one_contact_each(backend: Backend) {
    const ADDRESSES: usize = 600;
    let app = spawn_app(backend).await;
    let emails: Vec<String> = (0..ADDRESSES)
        .map(|i| format!("shared{i:04}@example.com"))
        .collect();
    let batches = |key: &str, reversed: bool| {
        let mut rows: Vec<pb::ImportRow> = emails
            .iter()
            .enumerate()
            .map(|(i, email)| row(email, json!({ key: i })))
            .collect();
        if reversed {
            rows.reverse();
        }
        rows.chunks(50)
            .map(|chunk| batch(pb::ImportMode::Upsert, chunk.to_vec()))
            .collect::<Vec<_>>()
    };
    let mut a = app.client_on_own_connection().await;
    let mut b = app.client_on_own_connection().await;
    let (batches_a, batches_b) = (batches("a", false), batches("b", true));
    let (left, right) = tokio::join!(import(&mut a, batches_a), import(&mut b, batches_b));
    let (left, right) = (left.expect("import a"), right.expect("import b"));
    let created = outcomes(&left)
        .into_iter()
        .chain(outcomes(&right))
        .filter(|o| *o == pb::ImportOutcome::Created)
        .count();
    assert_eq!(created, ADDRESSES, "each address created exactly once");

    let listed = pages(
        &mut a,
        pb::ListContactsRequest {
            limit: 1000,
            ..Default::default()
        },
    )
    .await;
    let contacts: Vec<&pb::Contact> = listed.iter().flat_map(|p| &p.contacts).collect();
    assert_eq!(contacts.len(), ADDRESSES, "no duplicate contacts");
    for contact in contacts {
        let i: usize = contact.email["shared".len().."shared".len() + 4]
            .parse()
            .expect("n");
        assert_eq!(
            json_of(contact),
            json!({"a": i, "b": i}),
            "{}",
            contact.email
        );
    }
}

/// Acknowledged batches stay; a batch in flight when the client goes away leaves
/// nothing. The batch is held in the database by a lock on one of its contacts
/// (the write lock on SQLite) until the import has gone.
async fn a_cancelled_import_keeps_acknowledged_batches_and_nothing_of_the_next(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        quiet_health(args);
        // The import holds the tenant's one stream until its task has ended.
        args.limits.max_streams_per_tenant = 1;
    })
    .await;
    let mut client = app.client();
    let blocker = create(&mut client, "blocker@example.com", json!({"v": 0})).await;
    let (requests, mut responses) = open_import(&mut client, 4).await;
    for n in 0..2 {
        let rows = (0..100)
            .map(|i| row(&format!("b{n}-{i}@example.com"), json!({"n": n})))
            .collect();
        requests
            .send(batch(pb::ImportMode::Upsert, rows))
            .await
            .expect("send a batch");
        let response = responses
            .message()
            .await
            .expect("a response")
            .expect("an ack");
        assert_eq!(response.created, 100 * (n + 1), "batch {n} acknowledged");
    }

    let mut lock = hold(&app, &blocker.id).await;
    let mut rows: Vec<pb::ImportRow> = (0..100)
        .map(|i| row(&format!("b2-{i}@example.com"), json!({"n": 2})))
        .collect();
    rows.push(row("blocker@example.com", json!({"v": 1})));
    requests
        .send(batch(pb::ImportMode::Upsert, rows))
        .await
        .expect("send the third batch");
    lock.wait_for_waiter(&app, "the third batch").await;
    drop(responses);
    drop(requests);
    // The import's task holds the tenant's only stream until it has dropped its batch.
    import_ended(&app).await;
    let mut other = app.client();
    lock.release().await;
    pool_goes_idle(&app, Duration::from_secs(10), "after the cancelled batch").await;

    let listed = pages(
        &mut other,
        pb::ListContactsRequest {
            limit: 1000,
            ..Default::default()
        },
    )
    .await;
    let emails: Vec<&str> = listed
        .iter()
        .flat_map(|p| &p.contacts)
        .map(|c| c.email.as_str())
        .collect();
    assert_eq!(emails.len(), 201, "two batches and the blocker: {emails:?}");
    assert!(
        !emails.iter().any(|e| e.starts_with("b2-")),
        "nothing of the third batch"
    );
    let blocker = other
        .get_contact(pb::GetContactRequest { id: blocker.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        json_of(&blocker),
        json!({"v": 0}),
        "the blocker was not updated"
    );
}

/// 100,000 rows through the Rust client (batches of 1,000), read back whole.
async fn a_100k_row_import_through_the_client_reads_back_completely(backend: Backend) {
    const ROWS: usize = 100_000;
    let app = spawn_app(backend).await;
    let contacts = app.sdk().contacts();
    let rows = futures_util::stream::iter(0..ROWS).map(|i| pb::ImportRow {
        email: format!("bulk{i:06}@example.com"),
        properties: Some(props(
            json!({"n": i, "tier": if i.is_multiple_of(2) { "even" } else { "odd" }}),
        )),
    });
    let mut results = contacts.import(pb::ImportMode::Upsert, rows);
    let mut seen = 0;
    while let Some(result) = results.next().await {
        let result = result.expect("the import runs to its end");
        assert_eq!(result.index, seen as i64, "results in row order");
        assert_eq!(
            result.outcome,
            pb::ImportOutcome::Created as i32,
            "row {seen}"
        );
        seen += 1;
    }
    assert_eq!(seen, ROWS);
    let mut listed = contacts.list(pb::ListContactsRequest {
        limit: 1000,
        ..Default::default()
    });
    let mut found = vec![false; ROWS];
    while let Some(contact) = listed.next().await {
        let contact = contact.expect("list");
        let n: usize = contact.email["bulk".len().."bulk".len() + 6]
            .parse()
            .expect("a number");
        assert!(!found[n], "{} listed twice", contact.email);
        found[n] = true;
        let expected = json!({"n": n, "tier": if n.is_multiple_of(2) { "even" } else { "odd" }});
        assert_eq!(json_of(&contact), expected, "{}", contact.email);
    }
    assert!(found.iter().all(|f| *f), "every row is a contact");
}

conformance!(
    a_100k_row_import_through_the_client_reads_back_completely,
    concurrent_imports_of_the_same_addresses_make_one_contact_each,
    a_cancelled_import_keeps_acknowledged_batches_and_nothing_of_the_next,
);
