//! The two query paths of issue 16's remaining targets: created_at ranges listed in
//! id order (the walk starts at the range's id floor, `store/common/filter.rs`) and
//! the whole-tenant count kept by triggers on PostgreSQL (`store/common/count.rs`).
//! Rows whose id is earlier than their created_at are written below the API, as an
//! older binary, a restore or a hand-written INSERT could, and must still be found.

use std::collections::BTreeSet;

use kraiter_contacts::api::pb::{self, ContactOrder, FilterOperator as Op};
use serde_json::json;

use super::filter_calls::{all, among, any, at, cond, count, list, reference};
use crate::conformance;
use crate::support::imports::{batch, import, row};
use crate::support::storage::Storage;
use crate::support::{Backend, Client, create, spawn_app};

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    let ts = ts.as_ref().expect("times are set");
    ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000)
}

fn ids(contacts: &[pb::Contact]) -> Vec<String> {
    contacts.iter().map(|c| c.id.clone()).collect()
}

/// The first page of a ListContacts stream in id order.
async fn first_page(client: &mut Client, filter: &pb::ContactFilter, limit: i32) -> Vec<String> {
    let mut stream = client
        .list_contacts(pb::ListContactsRequest {
            filter: Some(filter.clone()),
            limit,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let page = stream.message().await.expect("a page").unwrap_or_default();
    ids(&page.contacts)
}

/// The tenant's recorded id floor, if any (the tenant found through one of its ids).
async fn floor_of(storage: &mut Storage, any_id: &str) -> Option<String> {
    storage
        .text(
            "SELECT min_id FROM contact_id_floors \
             WHERE tenant_id = (SELECT tenant_id FROM contacts WHERE id = $1)",
            &[any_id],
        )
        .await
}

/// `select` (a count or a sum) over `table`'s rows of the tenant of `any_id`.
async fn of_tenant(storage: &mut Storage, select: &str, table: &str, any_id: &str) -> i64 {
    let sql = format!(
        "SELECT {select} FROM {table} \
         WHERE tenant_id = (SELECT tenant_id FROM contacts WHERE id = $1)"
    );
    storage.count(&sql, &[any_id]).await
}

async fn created_at_ranges_in_id_order_agree_with_the_reference(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let mut storage = Storage::open(&app).await;
    let mut made = Vec::new();
    for i in 0..12 {
        made.push(
            create(
                &mut client,
                &format!("c{i:02}@example.com"),
                json!({"i": i}),
            )
            .await,
        );
    }
    // Contacts created by an event that happened days ago: created_at is the event's
    // time, far earlier than the id's.
    for (i, days) in [(0, 3), (1, 1)] {
        let occurred = chrono::Utc::now() - chrono::Duration::days(days);
        activity
            .track_event(pb::TrackEventRequest {
                subject: Some(pb::track_event_request::Subject::Email(format!(
                    "old{i}@example.com"
                ))),
                name: "signed.up".into(),
                occurred_at: Some(timestamp(occurred.timestamp_micros())),
                ..Default::default()
            })
            .await
            .expect("track an event");
    }
    assert_eq!(
        floor_of(&mut storage, &made[0].id).await,
        None,
        "the service never makes an id earlier than its contact's created_at"
    );

    // Ties on created_at, so a range's edge holds several rows.
    storage
        .count(
            "UPDATE contacts SET created_at = (SELECT created_at FROM contacts WHERE id = $1) \
             WHERE id = $2 RETURNING revision",
            &[&made[5].id, &made[4].id],
        )
        .await;
    // Rows that break the rule: an existing one moved later (UPDATE), and one inserted
    // with an id from 2001 and a recent created_at (INSERT).
    storage
        .count(
            "UPDATE contacts SET created_at = (SELECT created_at FROM contacts WHERE id = $1) \
             WHERE id = $2 RETURNING revision",
            &[&made[9].id, &made[1].id],
        )
        .await;
    let old_id = format!("con_{}", ulid::Ulid::from_parts(978_307_200_000, 7));
    storage
        .count(
            "INSERT INTO contacts \
             (tenant_id, id, email, email_key, properties, search_text, created_at, updated_at) \
             SELECT tenant_id, $1, 'restored' || email, 'restored' || email_key, properties, \
             search_text, created_at, updated_at FROM contacts WHERE id = $2 RETURNING revision",
            &[&old_id, &made[7].id],
        )
        .await;
    assert_eq!(
        floor_of(&mut storage, &made[0].id).await.as_deref(),
        Some(old_id.as_str()),
        "a row with an id earlier than its created_at is recorded"
    );

    let everyone = list(&mut client, None, ContactOrder::Unspecified, 100).await;
    assert_eq!(everyone.len(), 15);
    let mut times: BTreeSet<i64> = everyone.iter().map(|c| micros(&c.created_at)).collect();
    for t in times.clone() {
        times.extend([t - 1, t + 1]);
    }
    let newest = *times.last().expect("times");
    let oldest = *times.first().expect("times");
    times.extend([newest + 86_400_000_000, oldest - 86_400_000_000]);
    let times: Vec<i64> = times.into_iter().collect();
    let mut filters = Vec::new();
    for (i, &t) in times.iter().enumerate() {
        let later = times[(i + 4).min(times.len() - 1)];
        let created = |op, t| at("created_at", op, timestamp(t));
        filters.push(created(Op::GreaterThanOrEqual, t));
        filters.push(created(Op::GreaterThan, t));
        filters.push(created(Op::Equals, t));
        filters.push(all(vec![
            created(Op::GreaterThanOrEqual, t),
            created(Op::LessThan, later),
        ]));
        filters.push(any(vec![
            created(Op::GreaterThan, t),
            created(Op::GreaterThanOrEqual, later),
        ]));
        // One branch has no floor, so the whole has none.
        filters.push(any(vec![
            created(Op::GreaterThanOrEqual, later),
            cond("properties.i", Op::Equals, json!(2)),
        ]));
        filters.push(all(vec![
            created(Op::GreaterThanOrEqual, t),
            among("properties.i", vec![json!(1), json!(3), json!(7), json!(9)]),
        ]));
    }
    for filter in &filters {
        let expected: Vec<String> = everyone
            .iter()
            .filter(|c| reference(filter, c))
            .map(|c| c.id.clone())
            .collect();
        let streamed = ids(&list(
            &mut client,
            Some(filter.clone()),
            ContactOrder::Unspecified,
            2,
        )
        .await);
        assert_eq!(streamed, expected, "{backend:?}: the stream of {filter:?}");
        let page = first_page(&mut client, filter, 3).await;
        let head: Vec<String> = expected.iter().take(3).cloned().collect();
        assert_eq!(page, head, "{backend:?}: the first page of {filter:?}");
        assert_eq!(
            count(&mut client, Some(filter.clone())).await,
            expected.len() as i64
        );
    }
    // The restored row is found by a range that starts after its id's time.
    let recent = at(
        "created_at",
        Op::GreaterThanOrEqual,
        made[7].created_at.expect("set"),
    );
    let found = ids(&list(&mut client, Some(recent), ContactOrder::Unspecified, 2).await);
    assert!(found.contains(&old_id), "{found:?}");
    assert!(found.contains(&made[1].id), "{found:?}");
}

async fn the_whole_tenant_count_stays_exact_under_racing_writes(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut storage = Storage::open(&app).await;
    let mut other = app.other_tenant_client().await;
    create(&mut other, "else@example.com", json!({})).await;
    let mut doomed = Vec::new();
    for i in 0..24 {
        doomed.push(
            create(&mut client, &format!("d{i}@example.com"), json!({}))
                .await
                .id,
        );
    }
    assert_eq!(count(&mut client, None).await, 24);

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let mut client = app.client();
        tasks.spawn(async move {
            for i in 0..25 {
                create(
                    &mut client,
                    &format!("w{worker}n{i}@example.com"),
                    json!({}),
                )
                .await;
            }
        });
    }
    for chunk in doomed.chunks(8) {
        let mut client = app.client();
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            for id in chunk {
                client
                    .delete_contact(pb::DeleteContactRequest {
                        id,
                        ..Default::default()
                    })
                    .await
                    .expect("delete");
            }
        });
    }
    for importer in 0..2 {
        let mut client = app.client();
        tasks.spawn(async move {
            // Each batch holds new addresses and addresses another importer or an
            // earlier batch already made: only the new ones add to the count.
            let batches = (0..3)
                .map(|b| {
                    let rows = (0..20)
                        .map(|r| {
                            row(
                                &format!("i{}@example.com", b * 10 + r),
                                json!({"by": importer}),
                            )
                        })
                        .collect();
                    batch(pb::ImportMode::Upsert, rows)
                })
                .collect();
            import(&mut client, batches).await.expect("import");
        });
    }
    let watcher = {
        let mut client = app.client();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..20 {
                seen.push(count(&mut client, None).await);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            seen
        })
    };
    // The counters' fold runs among the writers (a few rows at a time, so it
    // meets rows that writers hold and rows they write again after it moved them).
    let (stop_folding, mut stopped) = tokio::sync::watch::channel(false);
    let folder = {
        let store = app.store.clone();
        tokio::spawn(async move {
            let mut folded = 0;
            while !*stopped.borrow_and_update() {
                folded += store.fold_counts(3).await.expect("fold the counters");
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            folded
        })
    };
    while let Some(done) = tasks.join_next().await {
        done.expect("a writer");
    }
    stop_folding.send(true).expect("the folder");
    let folded = folder.await.expect("the folder");
    if backend == Backend::Postgres {
        assert!(folded > 0, "the fold moved rows while writers ran");
    }
    let seen = watcher.await.expect("the counter");
    // 24 to start; 100 creates, 24 deletes and 40 imported addresses (i0..i39).
    assert!(
        seen.iter().all(|&n| (0..=24 + 100 + 40).contains(&n)),
        "{seen:?}"
    );
    let expected = 100 + 40;
    let some_id = list(&mut client, None, ContactOrder::Unspecified, 1).await[0]
        .id
        .clone();
    let rows = of_tenant(&mut storage, "count(*)", "contacts", &some_id).await;
    assert_eq!(rows, expected);
    assert_eq!(count(&mut client, None).await, expected);
    if backend == Backend::Postgres {
        let sum = "CAST(sum(n) AS bigint)";
        let kept = of_tenant(&mut storage, sum, "contact_counts", &some_id).await;
        assert_eq!(kept, expected, "the counters hold what count(*) finds");
        // Folded to the end, a tenant's counter is one row, whatever wrote it. Another
        // test server's minutely fold may hold the fold's lock, and ours then folds
        // nothing: fold until one row is left, for ten seconds at most.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let rows = loop {
            app.store.fold_counts(10_000).await.expect("fold");
            let rows = of_tenant(&mut storage, "count(*)", "contact_counts", &some_id).await;
            if rows == 1 || std::time::Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(rows, 1, "one counter row once folded");
        assert_eq!(count(&mut client, None).await, expected);
    }
    // Writes below the API count too.
    let copy = format!("con_{}", ulid::Ulid::new());
    storage
        .count(
            "INSERT INTO contacts \
             (tenant_id, id, email, email_key, properties, search_text, created_at, updated_at) \
             SELECT tenant_id, $1, 'copy' || email, 'copy' || email_key, properties, \
             search_text, created_at, updated_at FROM contacts WHERE id = $2 RETURNING revision",
            &[&copy, &some_id],
        )
        .await;
    assert_eq!(count(&mut client, None).await, expected + 1);
    storage
        .count(
            "DELETE FROM contacts WHERE id = $1 RETURNING revision",
            &[&some_id],
        )
        .await;
    assert_eq!(count(&mut client, None).await, expected);
    assert_eq!(count(&mut other, None).await, 1, "the other tenant's count");
}

/// The id-floor rule at its edges, on both backends' triggers (PostgreSQL's checks it
/// through a function since migration 0012): an id equal to `con_` and its
/// `created_at`'s time part, and longer, is not below its floor; one that sorts just
/// before is, whether inserted or moved there by an update.
async fn the_id_floor_trigger_fires_exactly_below_the_rule(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut storage = Storage::open(&app).await;
    let model = create(&mut client, "model@example.com", json!({"a": 1})).await;
    let ms = micros(&model.created_at).div_euclid(1000) as u64;
    let time_part = |ms: u64| ulid::Ulid::from_parts(ms, 0).to_string()[..10].to_owned();
    let insert = "INSERT INTO contacts \
         (tenant_id, id, email, email_key, properties, search_text, created_at, updated_at) \
         SELECT tenant_id, $1, $2, $2, properties, search_text, created_at, updated_at \
         FROM contacts WHERE id = $3 RETURNING revision";
    // At the rule: the time part itself, then with the lowest suffix.
    for (id, email) in [
        (format!("con_{}", time_part(ms)), "at@example.com"),
        (
            format!("con_{}0000000000000000", time_part(ms)),
            "at0@example.com",
        ),
    ] {
        storage.count(insert, &[&id, email, &model.id]).await;
    }
    assert_eq!(
        floor_of(&mut storage, &model.id).await,
        None,
        "{backend:?}: an id at its created_at's time is not below the floor"
    );
    // An update that sets neither column records nothing; one that moves a row's
    // created_at a day past its id's time records it.
    let moved = create(&mut client, "moved@example.com", json!({})).await;
    storage
        .count(
            "UPDATE contacts SET search_text = search_text || ' x' WHERE id = $1 \
             RETURNING revision",
            &[&moved.id],
        )
        .await;
    assert_eq!(floor_of(&mut storage, &model.id).await, None);
    let later = match backend {
        Backend::Postgres => "created_at + interval '1 day'",
        Backend::Sqlite => "created_at + 86400000000",
    };
    storage
        .count(
            &format!("UPDATE contacts SET created_at = {later} WHERE id = $1 RETURNING revision"),
            &[&moved.id],
        )
        .await;
    assert_eq!(
        floor_of(&mut storage, &model.id).await.as_deref(),
        Some(moved.id.as_str()),
        "{backend:?}: an update that puts an id below its floor is recorded"
    );
    // One millisecond before the model's time, with the highest suffix: below, and
    // below the floor recorded so far.
    let below = format!("con_{}ZZZZZZZZZZZZZZZZ", time_part(ms - 1));
    storage
        .count(insert, &[&below, "below@example.com", &model.id])
        .await;
    assert_eq!(
        floor_of(&mut storage, &model.id).await.as_deref(),
        Some(below.as_str()),
        "{backend:?}: an id a millisecond early is recorded"
    );
    if let Storage::Postgres(conn) = &mut storage {
        // The function the trigger calls agrees with 0009's condition everywhere near
        // the edges: around the epoch, today, the end of ULID time, for ids one
        // character either side of the rule and of other shapes.
        let disagree: i64 = sqlx::query_scalar(
            "WITH t(at) AS (SELECT to_timestamp(s / 1000.0) FROM unnest(ARRAY[ \
                 -86400000, -1, 0, 1, 31, 32, 1023, 1024, $1::bigint - 1, $1::bigint, \
                 $1::bigint + 1, 281474976710655]) s), \
             i(at, id) AS ( \
                 SELECT at, 'con_' || kraiter_ulid_time(at) || suffix FROM t, \
                     unnest(ARRAY['', '0', 'Z', '00000000000000000']) suffix \
                 UNION ALL SELECT at, left('con_' || kraiter_ulid_time(at), -1) FROM t \
                 UNION ALL SELECT at, left('con_' || kraiter_ulid_time(at), -1) || 'Z' FROM t \
                 UNION ALL SELECT at, id FROM t, \
                     unnest(ARRAY['', 'con', 'con_', 'con_0', 'cpn_', 'CON_', 'con_~', 'x']) id) \
             SELECT count(*) FROM i WHERE kraiter_id_below_floor(id, at) \
                 IS DISTINCT FROM (id < 'con_' || kraiter_ulid_time(at))",
        )
        .bind(ms as i64)
        .fetch_one(conn)
        .await
        .expect("compare the conditions");
        assert_eq!(disagree, 0, "the trigger's condition is 0009's");
    }
}

conformance!(
    created_at_ranges_in_id_order_agree_with_the_reference,
    the_id_floor_trigger_fires_exactly_below_the_rule,
    the_whole_tenant_count_stays_exact_under_racing_writes,
);
