//! How a pipelined import ends early: its client gone with batches in flight or
//! after answers, or a batch that fails; whole batches are kept or none.

use super::*;
use crate::support::imports::import_ended;

/// The client goes away with two batches in flight, the first held by a lock and
/// the second waiting for it to commit: neither leaves anything.
async fn a_client_gone_with_batches_in_flight_leaves_none_of_them(backend: Backend) {
    let app = pipelined(backend, |args| args.limits.max_streams_per_tenant = 1).await;
    let mut client = app.client();
    let blocker = create(&mut client, "blocker@example.com", json!({"v": 0})).await;
    let (requests, mut responses) = open_import(&mut client, 4).await;
    requests
        .send(batch(Upsert, rows("zero", 30)))
        .await
        .expect("send");
    let zero = responses.message().await.expect("ok").expect("an ack");
    assert_eq!(zero.created, 30);
    let mut lock = hold(&app, &blocker.id).await;
    let mut first = rows("one", 30);
    first.push(row("blocker@example.com", json!({"v": 1})));
    requests
        .send(batch(Unspecified, first))
        .await
        .expect("send");
    requests
        .send(batch(Unspecified, rows("two", 30)))
        .await
        .expect("send");
    wait_for_the_next_batch(&mut lock, &app).await;
    drop(responses);
    drop(requests);
    import_ended(&app).await;
    lock.release().await;
    pool_goes_idle(&app, Duration::from_secs(10), "after the cancelled batches").await;

    only_batch_zero_and_the_blocker(&mut client, 31, &blocker.id).await;
}

/// Forty batches sent at once, each creating 20 contacts and updating one of its
/// own; the client reads 10 answers and goes away. What stays is whole batches (20
/// contacts, the update and their entries, or nothing), and a prefix of the import
/// that holds every answered batch.
async fn a_client_gone_after_answers_leaves_a_prefix_of_whole_batches(backend: Backend) {
    const BATCHES: usize = 40;
    const ROWS: usize = 20;
    const READ: usize = 10;
    let app = pipelined(backend, |args| args.limits.max_streams_per_tenant = 1).await;
    let mut client = app.client();
    let mut existing = Vec::new();
    for b in 0..BATCHES {
        existing.push(
            create(
                &mut client,
                &format!("e{b}@example.com"),
                json!({"batch": -1}),
            )
            .await,
        );
    }
    let (requests, mut responses) = open_import(&mut client, BATCHES).await;
    for b in 0..BATCHES {
        let mut rows: Vec<pb::ImportRow> = (0..ROWS)
            .map(|j| row(&format!("n{b}-{j}@example.com"), json!({"batch": b})))
            .collect();
        rows.push(row(&format!("e{b}@example.com"), json!({"batch": b})));
        let mode = if b == 0 { Upsert } else { Unspecified };
        requests.send(batch(mode, rows)).await.expect("send");
    }
    for b in 0..READ {
        let response = responses.message().await.expect("ok").expect("an answer");
        assert_eq!(
            response.results[0].index,
            (b * (ROWS + 1)) as i64,
            "in order"
        );
        assert_eq!(response.created, ((b + 1) * ROWS) as i64);
    }
    drop(responses);
    drop(requests);
    import_ended(&app).await;
    pool_goes_idle(&app, Duration::from_secs(10), "after the import went away").await;

    let listed = all_contacts(&mut client).await;
    let mut created = vec![0; BATCHES];
    for contact in listed.iter().filter(|c| c.email.starts_with('n')) {
        let b = json_of(contact)["batch"].as_u64().expect("batch") as usize;
        created[b] += 1;
    }
    let kept = created.iter().take_while(|n| **n == ROWS).count();
    assert!(kept >= READ, "every answered batch stays: {created:?}");
    assert!(
        created[kept..].iter().all(|n| *n == 0),
        "whole batches, and a prefix of the import: {created:?}"
    );
    for (b, contact) in existing.iter().enumerate() {
        let (now, entries) = contact_and_timeline(&mut client, &contact.id).await;
        let committed = b < kept;
        let want = if committed { json!(b) } else { json!(-1) };
        assert_eq!(json_of(&now)["batch"], want, "e{b}: its batch's update");
        assert_eq!(
            entries.len(),
            if committed { 2 } else { 1 },
            "e{b}'s entries"
        );
    }
    if let Some(sample) = listed.iter().find(|c| c.email == "n0-0@example.com") {
        let (_, entries) = contact_and_timeline(&mut client, &sample.id).await;
        assert_eq!(entries.len(), 1, "a created contact's entry");
    }
}

/// A contacts trigger that fails the insert of `email`: a store-level failure of
/// the batch holding that row.
async fn fail_inserts_of(app: &TestApp, email: &str) {
    if app.database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&app.database_url)
            .await
            .expect("connect");
        sqlx::raw_sql(&format!(
            "CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER fail_insert BEFORE INSERT ON contacts FOR EACH ROW \
             WHEN (NEW.email = '{email}') EXECUTE FUNCTION fail_insert();"
        ))
        .execute(&mut conn)
        .await
        .expect("create the trigger");
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
            .await
            .expect("open");
        sqlx::raw_sql(&format!(
            "CREATE TRIGGER fail_insert BEFORE INSERT ON contacts \
             WHEN NEW.email = '{email}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        ))
        .execute(&mut conn)
        .await
        .expect("create the trigger");
    }
}

/// A batch that fails in the database ends the import with its error, after the
/// batches before it were answered; the batch after it, which had done its work,
/// rolls back. (A database of its own on PostgreSQL, for the trigger.)
async fn a_failed_batch_ends_the_import_and_leaves_no_later_batch(backend: Backend) {
    let own = (backend == Backend::Postgres).then(crate::support::postgres::own_database);
    let app = pipelined(backend, |args| {
        if let Some(url) = own {
            args.store.database_url = url;
        }
    })
    .await;
    fail_inserts_of(&app, "boom@example.com").await;
    let mut client = app.client();
    let blocker = create(&mut client, "blocker@example.com", json!({"v": 0})).await;
    let (requests, mut responses) = open_import(&mut client, 4).await;
    requests
        .send(batch(Upsert, rows("zero", 20)))
        .await
        .expect("send");
    assert_eq!(
        responses.message().await.expect("ok").expect("ack").created,
        20
    );
    let mut lock = hold(&app, &blocker.id).await;
    let mut failing = rows("one", 20);
    failing.push(row("blocker@example.com", json!({"v": 1})));
    failing.push(row("boom@example.com", json!({})));
    requests
        .send(batch(Unspecified, failing))
        .await
        .expect("send");
    requests
        .send(batch(Unspecified, rows("two", 20)))
        .await
        .expect("send");
    wait_for_the_next_batch(&mut lock, &app).await;
    lock.release().await;
    let ended = responses.message().await;
    let status = ended.expect_err("the failed batch ends the import");
    assert_ne!(status.code(), Code::Ok);
    drop(requests);
    pool_goes_idle(&app, Duration::from_secs(10), "after the failed import").await;

    only_batch_zero_and_the_blocker(&mut client, 21, &blocker.id).await;
}

/// The tenant holds `count` contacts: the answered batch's (`zero-…`) and the
/// blocker, which no later batch updated.
async fn only_batch_zero_and_the_blocker(client: &mut Client, count: usize, blocker: &str) {
    let listed = all_contacts(client).await;
    let emails: Vec<&str> = listed.iter().map(|c| c.email.as_str()).collect();
    assert_eq!(
        emails.len(),
        count,
        "the answered batch and the blocker: {emails:?}"
    );
    assert!(
        emails
            .iter()
            .all(|e| e.starts_with("zero-") || *e == "blocker@example.com"),
        "only the answered batch and the blocker: {emails:?}"
    );
    let blocker = listed.iter().find(|c| c.id == blocker).expect("blocker");
    assert_eq!(
        json_of(blocker),
        json!({"v": 0}),
        "the blocker was not updated"
    );
}

conformance!(
    a_client_gone_with_batches_in_flight_leaves_none_of_them,
    a_client_gone_after_answers_leaves_a_prefix_of_whole_batches,
    a_failed_batch_ends_the_import_and_leaves_no_later_batch,
);
