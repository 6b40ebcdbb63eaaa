//! ImportContacts with batches written at once (`--import-depth`, here 4): on
//! PostgreSQL they overlap; SQLite writes one at a time, and the same promises are
//! checked there. Duplicates across overlapping batches merge in row order, commits
//! go in batch order, new contacts' ids follow row order (at depth 2, the default),
//! and a client gone or a failed batch leaves no later batch and nothing half of one.

use std::collections::HashMap;
use std::time::Duration;

use kraiter_contacts::api::pb;
use pb::ImportMode::{CreateOnly, Unspecified, Upsert};
use pb::ImportOutcome::{Created, Failed, Unchanged, Updated};
use serde_json::{Map, Value, json};
use sqlx::Connection;
use tonic::Code;

use crate::conformance;
use crate::support::imports::{batch, import, open_import, outcomes, row};
use crate::support::locks::{WriteLock, hold, pool_goes_idle};
use crate::support::wait::PATIENCE;
use crate::support::{
    Backend, Client, TestApp, contact_and_timeline, create, json_of, pages, quiet_health,
    spawn_app_with,
};
use kraiter_contacts::config::ServeArgs;

const DEPTH: u32 = 4;

/// An app whose imports write up to `DEPTH` batches at once; `quiet_health` for the
/// tests that wait on a held lock (SQLite's waiter is seen by the pool's use).
async fn pipelined(backend: Backend, configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    spawn_app_with(backend, |args| {
        quiet_health(args);
        args.limits.import_depth = DEPTH;
        configure(args);
    })
    .await
}

fn rows(prefix: &str, n: usize) -> Vec<pb::ImportRow> {
    (0..n)
        .map(|i| {
            row(
                &format!("{prefix}-{i}@example.com"),
                json!({"from": prefix}),
            )
        })
        .collect()
}

/// Every contact of the app's tenant.
async fn all_contacts(client: &mut Client) -> Vec<pb::Contact> {
    let request = pb::ListContactsRequest {
        limit: 1000,
        ..Default::default()
    };
    pages(client, request)
        .await
        .into_iter()
        .flat_map(|page| page.contacts)
        .collect()
}

/// Waits until the batch after the one `lock` holds up has done its work and waits
/// for that one to commit (PostgreSQL); on SQLite, where batches go one at a time,
/// until the held one waits on the lock.
async fn wait_for_the_next_batch(lock: &mut WriteLock, app: &TestApp) {
    if lock.turn_waiters().await.is_none() {
        return lock.wait_for_waiter(app, "the held batch").await;
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while lock.turn_waiters().await < Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no batch waited for the held one's commit within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The stream has said nothing for a while.
async fn silent(responses: &mut tonic::Streaming<pb::ImportContactsResponse>) {
    let said = tokio::time::timeout(Duration::from_millis(300), responses.message()).await;
    assert!(
        said.is_err(),
        "no response while the first batch is held: {said:?}"
    );
}

/// One batch at a time, in row order: what each row (address, properties) does to
/// its address's properties (null removes a key), and its outcome.
type Planned = Vec<Vec<(String, Value)>>;

fn model(batches: &Planned) -> (Vec<pb::ImportOutcome>, HashMap<String, Value>) {
    let mut contacts: HashMap<String, Map<String, Value>> = HashMap::new();
    let mut expected = Vec::new();
    for rows in batches {
        for (email, properties) in rows {
            let Value::Object(patch) = properties.clone() else {
                panic!("properties are an object");
            };
            let key = email.to_lowercase();
            match contacts.get_mut(&key) {
                None => {
                    let fresh = patch.into_iter().filter(|(_, v)| !v.is_null()).collect();
                    contacts.insert(key, fresh);
                    expected.push(Created);
                }
                Some(props) => {
                    let before = props.clone();
                    for (k, v) in patch {
                        if v.is_null() {
                            props.remove(&k);
                        } else {
                            props.insert(k, v);
                        }
                    }
                    expected.push(if *props == before { Unchanged } else { Updated });
                }
            }
        }
    }
    let contacts = contacts
        .into_iter()
        .map(|(k, v)| (k, Value::Object(v)))
        .collect();
    (expected, contacts)
}

fn object(pairs: &[(&str, Value)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

/// Forty small batches, up to four in flight: addresses shared by neighbours, by
/// batches two apart and by every tenth batch merge in row order, as a model of one
/// batch at a time says, each row with its outcome and entry, the totals running.
async fn duplicates_across_overlapping_batches_merge_in_row_order(backend: Backend) {
    const BATCHES: usize = 40;
    let app = pipelined(backend, |_| {}).await;
    let mut client = app.client();
    let mut planned: Planned = Vec::new();
    for i in 0..BATCHES {
        let mut rows: Vec<(String, Value)> = (0..8)
            .map(|j| (format!("u{i}-{j}@example.com"), json!({"i": i})))
            .collect();
        let pair = format!("p{i}");
        rows.push((
            format!("Pair{}@example.com", i / 2),
            object(&[("last", json!(i)), (&pair, json!(i))]),
        ));
        rows.push((
            format!("gap{}-{}@example.com", i % 2, i / 4),
            json!({"last": i}),
        ));
        if i % 10 == 0 {
            let gone = if i == 20 { Value::Null } else { json!(i) };
            rows.push((
                "every10@example.com".to_owned(),
                json!({"last": i, "gone": gone}),
            ));
        }
        // The shared rows at different places in their batches.
        let len = rows.len();
        rows.rotate_left(i % len);
        planned.push(rows);
    }
    let (expected, contacts) = model(&planned);
    let sizes: Vec<usize> = planned.iter().map(Vec::len).collect();
    let batches = planned
        .iter()
        .enumerate()
        .map(|(i, rows)| {
            let mode = if i == 0 { Upsert } else { Unspecified };
            batch(mode, rows.iter().map(|(e, p)| row(e, p.clone())).collect())
        })
        .collect();
    let responses = import(&mut client, batches).await.expect("import");
    assert_eq!(outcomes(&responses), expected, "outcomes in row order");
    assert_eq!(responses.len(), BATCHES, "a response per batch");
    let (mut first, mut created, mut updated) = (0, 0, 0);
    for (response, size) in responses.iter().zip(&sizes) {
        let indexes: Vec<i64> = response.results.iter().map(|r| r.index).collect();
        let want: Vec<i64> = (first..first + *size as i64).collect();
        assert_eq!(indexes, want, "responses in batch order");
        first += *size as i64;
        created += outcomes(std::slice::from_ref(response))
            .iter()
            .filter(|o| **o == Created)
            .count() as i64;
        updated += outcomes(std::slice::from_ref(response))
            .iter()
            .filter(|o| **o == Updated)
            .count() as i64;
        assert_eq!((response.created, response.updated), (created, updated));
    }

    let listed = all_contacts(&mut client).await;
    assert_eq!(listed.len(), contacts.len(), "one contact per address");
    for contact in &listed {
        let want = &contacts[&contact.email.to_lowercase()];
        assert_eq!(&json_of(contact), want, "{}", contact.email);
    }
    let every10 = listed
        .iter()
        .find(|c| c.email == "every10@example.com")
        .expect("every10");
    let (_, entries) = contact_and_timeline(&mut client, &every10.id).await;
    let types: Vec<&str> = entries.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(
        types,
        [
            "contact.created",
            "contact.updated",
            "contact.updated",
            "contact.updated"
        ],
        "an entry per written row, in order"
    );
}

/// Create-only, each batch creating an address and naming the one the batch before
/// it created: that row is a CONFLICT (the batch waits for the one before to
/// commit, then finds the address), the others are created, once each.
async fn create_only_conflicts_with_the_batch_before_it(backend: Backend) {
    const BATCHES: usize = 30;
    let app = pipelined(backend, |_| {}).await;
    let mut client = app.client();
    let mut batches = Vec::new();
    let mut expected = Vec::new();
    for i in 0..BATCHES {
        let mut rows = rows(&format!("n{i}"), 5);
        expected.extend([Created; 5]);
        rows.push(row(&format!("chain{i}@example.com"), json!({"i": i})));
        expected.push(Created);
        if i > 0 {
            rows.push(row(&format!("Chain{}@example.com", i - 1), json!({"i": i})));
            expected.push(Failed);
        }
        batches.push(batch(if i == 0 { CreateOnly } else { Unspecified }, rows));
    }
    let responses = import(&mut client, batches).await.expect("import");
    assert_eq!(outcomes(&responses), expected);
    for result in responses.iter().flat_map(|r| &r.results) {
        if let Some(error) = &result.error {
            assert_eq!(error.code, Code::AlreadyExists as i32, "{error:?}");
        }
    }
    let last = responses.last().expect("responses");
    assert_eq!(
        (last.created, last.failed),
        (6 * BATCHES as i64, BATCHES as i64 - 1)
    );
    let listed = all_contacts(&mut client).await;
    assert_eq!(listed.len(), 6 * BATCHES);
    for contact in listed.iter().filter(|c| c.email.starts_with("chain")) {
        let i: usize = contact.email["chain".len()..contact.email.find('@').expect("@")]
            .parse()
            .expect("n");
        assert_eq!(
            json_of(contact),
            json!({"i": i}),
            "created by its own row only"
        );
    }
}

/// Two batches in flight, the first held by a lock on one of its contacts: the
/// second does its work but does not commit, and nothing is answered; once the lock
/// goes, both commit and are answered in order.
async fn a_batch_commits_only_after_the_batch_before_it(backend: Backend) {
    let app = pipelined(backend, |_| {}).await;
    let mut client = app.client();
    let mut other = app.client();
    let blocker = create(&mut client, "blocker@example.com", json!({"v": 0})).await;
    let mut lock = hold(&app, &blocker.id).await;
    let (requests, mut responses) = open_import(&mut client, 4).await;
    let mut first = rows("one", 50);
    first.push(row("blocker@example.com", json!({"v": 1})));
    requests.send(batch(Upsert, first)).await.expect("send");
    requests
        .send(batch(Unspecified, rows("two", 50)))
        .await
        .expect("send");
    wait_for_the_next_batch(&mut lock, &app).await;
    silent(&mut responses).await;
    let seen = other
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: "two-0@example.com".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .contact;
    assert_eq!(seen, None, "the second batch has not committed");

    lock.release().await;
    let one = responses.message().await.expect("ok").expect("first");
    assert_eq!((one.results[0].index, one.created, one.updated), (0, 50, 1));
    let two = responses.message().await.expect("ok").expect("second");
    assert_eq!(
        (two.results[0].index, two.created, two.updated),
        (51, 100, 1)
    );
    drop(requests);
    assert!(responses.message().await.expect("ends OK").is_none());
    assert_eq!(all_contacts(&mut other).await.len(), 101);
}

/// Two pipelined imports of the same addresses in batches of different sizes, so a
/// batch of one spans two of the other's in flight: a row lock and a commit-order
/// wait can form a cycle that only the database sees whole (`app::import`); both
/// imports end, every address is one contact with both keys.
async fn crossing_pipelined_imports_of_shared_addresses_both_finish(backend: Backend) {
    const ADDRESSES: usize = 600;
    let app = pipelined(backend, |_| {}).await;
    let emails: Vec<String> = (0..ADDRESSES)
        .map(|i| format!("cross{i:04}@example.com"))
        .collect();
    let batches = |key: &str, size: usize, reversed: bool| {
        let mut rows: Vec<pb::ImportRow> = emails
            .iter()
            .enumerate()
            .map(|(i, email)| row(email, object(&[(key, json!(i))])))
            .collect();
        if reversed {
            rows.reverse();
        }
        rows.chunks(size)
            .map(|chunk| batch(Upsert, chunk.to_vec()))
            .collect::<Vec<_>>()
    };
    let mut a = app.client_on_own_connection().await;
    let mut b = app.client_on_own_connection().await;
    let (batches_a, batches_b) = (batches("a", 40, false), batches("b", 70, true));
    let finished = tokio::time::timeout(PATIENCE, async {
        tokio::join!(import(&mut a, batches_a), import(&mut b, batches_b))
    })
    .await
    .expect("both imports finish");
    let (left, right) = (finished.0.expect("import a"), finished.1.expect("import b"));
    let created = outcomes(&left)
        .into_iter()
        .chain(outcomes(&right))
        .filter(|o| *o == Created)
        .count();
    assert_eq!(created, ADDRESSES, "each address created once");
    let listed = all_contacts(&mut a).await;
    assert_eq!(listed.len(), ADDRESSES);
    for contact in &listed {
        let i: usize = contact.email["cross".len().."cross".len() + 4]
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

/// Rows with many properties, so that a batch of them takes its time between its
/// start and its last row (each row's properties are merged and written).
fn heavy_rows(prefix: &str, n: usize) -> Vec<pb::ImportRow> {
    (0..n)
        .map(|i| {
            let properties: Map<String, Value> = (0..40)
                .map(|k| {
                    (
                        format!("field_{k}"),
                        json!(format!("{prefix} row {i} value {k}")),
                    )
                })
                .collect();
            row(
                &format!("{prefix}-{i}@example.com"),
                Value::Object(properties),
            )
        })
        .collect()
}

/// The time part of a contact id, in milliseconds.
fn id_time_ms(id: &str) -> i64 {
    let ulid = id.strip_prefix("con_").expect("a contact id");
    let ulid = ulid::Ulid::from_string(ulid).expect("a ulid");
    ulid.timestamp_ms() as i64
}

/// At depth 2, a large batch of new rows with a one-row batch after it, again and
/// again: the small batch is written while the large one still is, yet every
/// contact the import creates has an id in row order, so the tenant listed in id
/// order is the import's rows in order (a re-imported export keeps its order). And
/// ids given ahead of the write keep the id-floor rule: no id is earlier than its
/// contact's created_at.
async fn new_contacts_ids_follow_row_order_at_depth_two(backend: Backend) {
    const ROUNDS: usize = 6;
    const LARGE: usize = 600;
    let app = spawn_app_with(backend, |args| args.limits.import_depth = 2).await;
    let mut client = app.client();
    let mut batches = Vec::new();
    for round in 0..ROUNDS {
        batches.push(heavy_rows(&format!("large{round}"), LARGE));
        batches.push(rows(&format!("small{round}"), 1));
    }
    let emails: Vec<String> = batches
        .iter()
        .flatten()
        .map(|row| row.email.clone())
        .collect();
    let requests = batches
        .into_iter()
        .map(|rows| batch(Unspecified, rows))
        .collect();
    let responses = import(&mut client, requests).await.expect("import");
    let outcomes = outcomes(&responses);
    assert_eq!(outcomes.len(), emails.len(), "a result per row");
    assert!(outcomes.iter().all(|o| *o == Created), "every row is new");
    let ids: Vec<&str> = responses
        .iter()
        .flat_map(|r| &r.results)
        .map(|r| r.contact_id.as_str())
        .collect();
    let out_of_order: Vec<usize> = (1..ids.len()).filter(|&i| ids[i - 1] >= ids[i]).collect();
    assert!(
        out_of_order.is_empty(),
        "ids increase with row index; not at rows {out_of_order:?}"
    );

    let listed = all_contacts(&mut client).await;
    let listed_emails: Vec<&str> = listed.iter().map(|c| c.email.as_str()).collect();
    assert_eq!(listed_emails, emails, "listed in id order = import order");
    for contact in &listed {
        let created = contact.created_at.as_ref().expect("created_at");
        let created_ms = created.seconds * 1000 + i64::from(created.nanos / 1_000_000);
        assert!(
            id_time_ms(&contact.id) >= created_ms,
            "{}'s id is earlier than its created_at {created:?}",
            contact.id
        );
    }
}

conformance!(
    new_contacts_ids_follow_row_order_at_depth_two,
    duplicates_across_overlapping_batches_merge_in_row_order,
    create_only_conflicts_with_the_batch_before_it,
    a_batch_commits_only_after_the_batch_before_it,
    crossing_pipelined_imports_of_shared_addresses_both_finish,
);

mod ends;
