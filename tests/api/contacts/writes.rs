//! Writes made at the same time: creates that queue behind a write in flight share
//! batches (`store/coalesce.rs`), on both backends, so each
//! caller must still get exactly its own answer (its contact, ALREADY_EXISTS for a
//! taken address, UNAUTHENTICATED for a revoked key, ABORTED for a stale etag), and
//! every write must leave its row, its timeline entry and its change, once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kraiter_contacts::client::pb;
use kraiter_contacts::client::pb::ContactChangeType as Kind;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tonic::Code;

use crate::conformance;
use crate::support::locks;
use crate::support::metrics::try_sample;
use crate::support::wait::PATIENCE;
use crate::support::{
    Backend, Client, create, json_of, props, spawn_app, spawn_app_with, timeline, unique_tenant,
};

fn writes(body: &str) -> (f64, f64) {
    let sample = |name| try_sample(body, name).unwrap_or(0.0);
    (
        sample("kraiter_db_write_batches_total "),
        sample("kraiter_db_writes_total "),
    )
}

/// What one concurrent call did.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Contact(pb::Contact),
    Failed(Code),
}

enum Call {
    Create {
        key: String,
        email: String,
    },
    Update {
        id: String,
        set: Value,
        etag: String,
    },
}

/// Every change of the tenant, oldest first; waits `settle` for one more to show
/// that there is none.
async fn all_changes(client: &mut Client, expected: usize) -> Vec<pb::ContactChange> {
    let mut stream = client
        .watch_contacts(pb::WatchContactsRequest {
            start: pb::WatchStart::OldestRetained as i32,
            max_changes: expected as i32 + 1,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut changes = Vec::new();
    loop {
        let patience = if changes.len() < expected {
            Duration::from_secs(20)
        } else {
            Duration::from_millis(1500)
        };
        match tokio::time::timeout(patience, stream.message()).await {
            Ok(Ok(Some(change))) => changes.push(change),
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(status)) => panic!("watch failed: {status:?}"),
        }
    }
    changes
}

async fn entries(client: &mut Client, id: &str, kind: &str) -> Vec<pb::TimelineEntry> {
    timeline(
        client,
        pb::ListContactTimelineRequest {
            id: id.to_owned(),
            types: vec![kind.to_owned()],
            limit: 1000,
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .flat_map(|page| page.entries)
    .collect()
}

async fn concurrent_writes_each_get_their_own_answer_and_leave_everything_once(backend: Backend) {
    // Two create statements in flight (the default is one, which every other test
    // runs), so batches also run side by side.
    let app = spawn_app_with(backend, |args| args.store.db_write_batches = 2).await;
    let mut mine = app.client();
    let other_key = app.other_tenant_key().await;
    let mut theirs = app.client_with_key(Some(&other_key));
    // A third tenant's key, used once (so the server knows its tenant, and only the
    // statement's own check can refuse it), then revoked.
    let (revoked_id, revoked) =
        kraiter_contacts::keys::create(app.store.as_ref(), &unique_tenant())
            .await
            .expect("a third tenant's key");
    create(
        &mut app.client_with_key(Some(&revoked)),
        "before-revoke@example.com",
        json!({}),
    )
    .await;
    assert!(app.store.revoke_api_key(&revoked_id).await.expect("revoke"));

    // Seeded: a taken address, contacts to update, one to update under an etag.
    let taken = create(&mut mine, "taken@example.com", json!({"seeded": true})).await;
    let mut targets = Vec::new();
    for i in 0..8 {
        targets.push(
            create(
                &mut mine,
                &format!("target{i}@example.com"),
                json!({"i": i}),
            )
            .await,
        );
    }
    let guarded = create(&mut mine, "guarded@example.com", json!({"v": 0})).await;
    let seeded_mine = 10;

    let mut calls: Vec<Call> = Vec::new();
    let mine_create = |email: String| Call::Create {
        key: app.key.clone(),
        email,
    };
    for i in 0..40 {
        calls.push(mine_create(format!("new{i}@example.com")));
    }
    for j in 0..5 {
        // The same address twice, spelled differently: one wins.
        calls.push(mine_create(format!("dup{j}@example.com")));
        calls.push(mine_create(format!("DUP{j}@Example.com")));
    }
    calls.push(mine_create("taken@example.com".into()));
    calls.push(mine_create("TAKEN@example.com".into()));
    for i in 0..12 {
        // Addresses that tenant A also creates now: another tenant's are its own.
        calls.push(Call::Create {
            key: other_key.clone(),
            email: format!("new{i}@example.com"),
        });
    }
    for i in 0..6 {
        calls.push(Call::Create {
            key: revoked.clone(),
            email: format!("revoked{i}@example.com"),
        });
    }
    for i in 0..20 {
        calls.push(Call::Update {
            id: targets[0].id.clone(),
            set: json!({ format!("k{i}"): i }),
            etag: String::new(),
        });
    }
    for (i, target) in targets.iter().enumerate().skip(1) {
        calls.push(Call::Update {
            id: target.id.clone(),
            set: json!({"updated": i}),
            etag: String::new(),
        });
    }
    for i in 0..6 {
        calls.push(Call::Update {
            id: guarded.id.clone(),
            set: json!({"v": i + 1}),
            etag: guarded.etag.clone(),
        });
    }
    // Interleave the kinds, so creates and updates queue together.
    let total = calls.len();
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by_key(|&n| (n * 37) % total);

    let before = writes(&kraiter_contacts::metrics::render(&app.store));
    let mut running = JoinSet::new();
    let mut slots: Vec<Option<Call>> = calls.into_iter().map(Some).collect();
    for n in order {
        let call = slots[n].take().expect("each call once");
        let key = match &call {
            Call::Create { key, .. } => key.clone(),
            Call::Update { .. } => app.key.clone(),
        };
        let mut client = app.client_with_key(Some(&key));
        running.spawn(async move {
            let got = match &call {
                Call::Create { email, .. } => {
                    client
                        .create_contact(pb::CreateContactRequest {
                            email: email.clone(),
                            properties: Some(props(json!({"n": n}))),
                            ..Default::default()
                        })
                        .await
                }
                Call::Update { id, set, etag } => {
                    client
                        .update_contact(pb::UpdateContactRequest {
                            id: id.clone(),
                            email: None,
                            properties: Some(props(set.clone())),
                            etag: etag.clone(),
                            ..Default::default()
                        })
                        .await
                }
            };
            let got = match got {
                Ok(contact) => Got::Contact(contact.into_inner()),
                Err(status) => Got::Failed(status.code()),
            };
            (n, call, key, got)
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = running.join_next().await {
        answers.push(done.expect("a call answered"));
    }
    assert_eq!(answers.len(), total);

    // Each answer, by what the call was.
    let mut created_mine: Vec<pb::Contact> = Vec::new();
    let mut created_theirs: Vec<pb::Contact> = Vec::new();
    let mut addresses: HashMap<String, Vec<Got>> = HashMap::new();
    let mut guarded_wins = Vec::new();
    for (n, call, key, got) in answers {
        match call {
            Call::Create { email, .. } if key == revoked => {
                assert_eq!(got, Got::Failed(Code::Unauthenticated), "call {n}: {email}");
            }
            Call::Create { email, .. } => {
                let lower = email.to_lowercase();
                if let Got::Contact(contact) = &got {
                    assert_eq!(contact.email, email, "call {n}: its own contact");
                    assert_eq!(
                        json_of(contact),
                        json!({"n": n}),
                        "call {n}: its own properties"
                    );
                    if key == other_key {
                        created_theirs.push(contact.clone());
                    } else {
                        created_mine.push(contact.clone());
                    }
                }
                if key == app.key {
                    addresses.entry(lower).or_default().push(got);
                } else {
                    assert!(matches!(got, Got::Contact(_)), "call {n}: {email}: {got:?}");
                }
            }
            Call::Update { id, set, etag } => match got {
                Got::Contact(contact) => {
                    assert_eq!(contact.id, id, "call {n}: its own contact");
                    let have = json_of(&contact);
                    for (k, v) in set.as_object().expect("an object") {
                        assert_eq!(have.get(k), Some(v), "call {n}: its own change is in");
                    }
                    if !etag.is_empty() {
                        guarded_wins.push(contact);
                    }
                }
                Got::Failed(code) => {
                    assert!(!etag.is_empty(), "call {n}: an update failed: {code:?}");
                    assert_eq!(code, Code::Aborted, "call {n}: a stale etag");
                }
            },
        }
    }
    for (address, got) in &addresses {
        let wins = got.iter().filter(|g| matches!(g, Got::Contact(_))).count();
        let refused = got
            .iter()
            .filter(|g| **g == Got::Failed(Code::AlreadyExists))
            .count();
        let expected_wins = usize::from(address != "taken@example.com");
        assert_eq!(
            (wins, refused),
            (expected_wins, got.len() - expected_wins),
            "{address}: {got:?}"
        );
    }
    assert_eq!(created_mine.len(), 40 + 5);
    assert_eq!(created_theirs.len(), 12);
    assert_eq!(guarded_wins.len(), 1, "one etag update wins");

    // The rows: every created contact reads back as answered; the updated ones carry
    // every change.
    for contact in &created_mine {
        let read = mine
            .get_contact(pb::GetContactRequest {
                id: contact.id.clone(),
            })
            .await
            .expect("a created contact")
            .into_inner();
        assert_eq!(read, *contact);
        assert_eq!(
            entries(&mut mine, &contact.id, "contact.created")
                .await
                .len(),
            1
        );
    }
    for contact in &created_theirs {
        let read = theirs
            .get_contact(pb::GetContactRequest {
                id: contact.id.clone(),
            })
            .await
            .expect("their contact")
            .into_inner();
        assert_eq!(read, *contact);
    }
    let merged = mine
        .get_contact(pb::GetContactRequest {
            id: targets[0].id.clone(),
        })
        .await
        .expect("merged")
        .into_inner();
    let mut want = json!({"i": 0});
    for i in 0..20 {
        want[format!("k{i}")] = json!(i);
    }
    assert_eq!(json_of(&merged), want, "no merge was lost");
    assert_eq!(
        entries(&mut mine, &targets[0].id, "contact.updated")
            .await
            .len(),
        20
    );
    let unchanged = mine
        .get_contact(pb::GetContactRequest {
            id: taken.id.clone(),
        })
        .await
        .expect("taken")
        .into_inner();
    assert_eq!(unchanged, taken, "a refused create changed nothing");
    assert_eq!(
        entries(&mut mine, &guarded.id, "contact.updated")
            .await
            .len(),
        1
    );

    // The feed: one CREATED per contact, one UPDATED per write, each contact's in
    // revision order, and nothing else.
    let updates = 20 + 7 + 1;
    let changes = all_changes(&mut mine, seeded_mine + 45 + updates).await;
    assert_eq!(changes.len(), seeded_mine + 45 + updates, "{changes:?}");
    let mut per_contact: BTreeMap<String, Vec<(Kind, i64)>> = BTreeMap::new();
    for change in &changes {
        let kind = Kind::try_from(change.r#type).expect("a known type");
        let contact = change.contact.as_ref().expect("the contact");
        per_contact
            .entry(change.contact_id.clone())
            .or_default()
            .push((kind, per_contact_len(contact)));
    }
    for contact in &created_mine {
        let kinds: Vec<Kind> = per_contact[&contact.id].iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [Kind::Created], "{}", contact.email);
    }
    let target_changes = &per_contact[&targets[0].id];
    assert_eq!(target_changes.len(), 21);
    assert_eq!(target_changes[0].0, Kind::Created);
    // Each merge adds one property: in commit order, the counts grow by one.
    let sizes: Vec<i64> = target_changes.iter().map(|(_, size)| *size).collect();
    let growing: Vec<i64> = (1..=21).collect();
    assert_eq!(
        sizes, growing,
        "the feed has one contact's changes in commit order"
    );
    let theirs_changes = all_changes(&mut theirs, 12).await;
    assert_eq!(
        theirs_changes.len(),
        12,
        "tenant B sees its own creates only"
    );

    // The app's own store's counts since the calls began: more creates than
    // batches means some of these calls shared one.
    let (batches, carried) = writes(&kraiter_contacts::metrics::render(&app.store));
    let (batches, carried) = (batches - before.0, carried - before.1);
    assert!(
        carried > batches,
        "{carried} writes in {batches} batches: none were coalesced"
    );
}

/// How many properties the contact of a change has.
fn per_contact_len(contact: &pb::Contact) -> i64 {
    json_of(contact).as_object().map_or(0, |o| o.len() as i64)
}

conformance!(concurrent_writes_each_get_their_own_answer_and_leave_everything_once);

/// PostgreSQL carries creates in one statement at a time by default. One stuck on a
/// lock (here its tenant's row, which the insert's foreign-key check must share) must
/// not hold other tenants' creates behind it: after a short wait a spare statement
/// carries them, and the stuck one is answered once the lock goes.
async fn a_create_stuck_on_a_lock_holds_up_no_other_tenant() {
    let app = spawn_app(Backend::Postgres).await;
    let stuck_tenant = unique_tenant();
    let (_, stuck_key) = kraiter_contacts::keys::create(app.store.as_ref(), &stuck_tenant)
        .await
        .expect("the stuck tenant's key");
    let mut stuck_client = app.client_with_key(Some(&stuck_key));
    // Its key known to the server, so the stuck call waits in its statement only.
    create(&mut stuck_client, "first@example.com", json!({})).await;

    let mut lock = locks::hold_tenant(&app, stuck_tenant.as_str()).await;
    let stuck = tokio::spawn(async move {
        stuck_client
            .create_contact(pb::CreateContactRequest {
                email: "stuck@example.com".into(),
                ..Default::default()
            })
            .await
    });
    lock.wait_for_waiter(&app, "the stuck create").await;

    let mut mine = app.client();
    for i in 0..5 {
        let email = format!("unblocked{i}@example.com");
        tokio::time::timeout(Duration::from_secs(5), create(&mut mine, &email, json!({})))
            .await
            .unwrap_or_else(|_| panic!("{email}: held up by another tenant's stuck create"));
    }
    assert!(!stuck.is_finished(), "the stuck create still waits");

    lock.release().await;
    let created = tokio::time::timeout(PATIENCE, stuck)
        .await
        .expect("answered once the lock goes")
        .expect("task")
        .expect("the stuck create succeeds");
    assert_eq!(created.into_inner().email, "stuck@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_stuck_on_a_lock_holds_up_no_other_tenant_on_postgres() {
    a_create_stuck_on_a_lock_holds_up_no_other_tenant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_stuck_on_a_lock_holds_up_no_other_tenant_through_pgbouncer() {
    crate::support::pgbouncer::scope(a_create_stuck_on_a_lock_holds_up_no_other_tenant()).await;
}
