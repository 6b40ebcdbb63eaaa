//! Point reads made at the same time: on PostgreSQL they share statements
//! (`store/postgres/lookups.rs`), so each caller must still get exactly its own
//! answer: its contact, NOT_FOUND, `contact: None` or UNAUTHENTICATED, never another
//! caller's or another tenant's.

use kraiter_contacts::client::pb;
use serde_json::json;
use tokio::task::JoinSet;
use tonic::Code;

use crate::conformance;
use crate::support::metrics::try_sample;
use crate::support::{Backend, create, spawn_app, unique_tenant};

/// What one concurrent call should get.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Contact(pb::Contact),
    NotFound,
    /// GetContactByEmail's empty answer.
    NoContact,
    Unauthenticated,
}

fn lookups(body: &str) -> (f64, f64) {
    let sample = |name| try_sample(body, name).unwrap_or(0.0);
    (
        sample("kraiter_db_lookup_batches_total "),
        sample("kraiter_db_lookups_total "),
    )
}

async fn concurrent_point_reads_each_get_their_own_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut mine = app.client();
    let other_key = app.other_tenant_key().await;
    let mut theirs = app.client_with_key(Some(&other_key));
    let (revoked_id, revoked) =
        kraiter_contacts::keys::create(app.store.as_ref(), &unique_tenant())
            .await
            .expect("a third tenant's key");
    assert!(app.store.revoke_api_key(&revoked_id).await.expect("revoke"));

    let mut contacts = Vec::new();
    for i in 0..24 {
        contacts.push(
            create(
                &mut mine,
                &format!("Mixed.Case{i}@Example.com"),
                json!({"i": i}),
            )
            .await,
        );
    }
    let foreign = create(
        &mut theirs,
        "foreign@example.com",
        json!({"owner": "other"}),
    )
    .await;

    // (key, by id or by email, the value, what it must get), in a mixed order.
    let mut calls: Vec<(String, bool, String, Expect)> = Vec::new();
    for round in 0..8 {
        for (i, contact) in contacts.iter().enumerate() {
            let by_email = (i + round) % 2 == 0;
            let value = if by_email {
                // Email lookups ignore case.
                contact.email.to_uppercase()
            } else {
                contact.id.clone()
            };
            calls.push((
                app.key.clone(),
                by_email,
                value,
                Expect::Contact(contact.clone()),
            ));
        }
        calls.push((app.key.clone(), false, foreign.id.clone(), Expect::NotFound));
        calls.push((
            app.key.clone(),
            true,
            foreign.email.clone(),
            Expect::NoContact,
        ));
        calls.push((
            other_key.clone(),
            false,
            foreign.id.clone(),
            Expect::Contact(foreign.clone()),
        ));
        calls.push((
            other_key.clone(),
            false,
            contacts[round].id.clone(),
            Expect::NotFound,
        ));
        calls.push((
            app.key.clone(),
            false,
            format!("con_01J0000000000000000000{round:04}"),
            Expect::NotFound,
        ));
        calls.push((
            revoked.clone(),
            false,
            contacts[round].id.clone(),
            Expect::Unauthenticated,
        ));
        calls.push((
            revoked.clone(),
            true,
            contacts[round].email.clone(),
            Expect::Unauthenticated,
        ));
    }

    let before = lookups(&kraiter_contacts::metrics::render(&app.store));
    let mut running = JoinSet::new();
    for (n, (key, by_email, value, expect)) in calls.into_iter().enumerate() {
        let mut client = app.client_with_key(Some(&key));
        running.spawn(async move {
            let got = if by_email {
                client
                    .get_contact_by_email(pb::GetContactByEmailRequest {
                        email: value.clone(),
                    })
                    .await
                    .map(|found| match found.into_inner().contact {
                        Some(contact) => Expect::Contact(contact),
                        None => Expect::NoContact,
                    })
            } else {
                client
                    .get_contact(pb::GetContactRequest { id: value.clone() })
                    .await
                    .map(|found| Expect::Contact(found.into_inner()))
            };
            let got = got.unwrap_or_else(|status| match status.code() {
                Code::NotFound => Expect::NotFound,
                Code::Unauthenticated => Expect::Unauthenticated,
                _ => panic!("call {n} ({value}) failed: {status:?}"),
            });
            assert_eq!(got, expect, "call {n}: {value}");
        });
    }
    let mut answered = 0;
    while let Some(done) = running.join_next().await {
        done.expect("a call got its own answer");
        answered += 1;
    }
    assert_eq!(answered, 8 * 31);

    if backend == Backend::Postgres {
        // The app's own store's counts since the calls began: more lookups than
        // statements means some of these calls shared one.
        let (batches, answered) = lookups(&kraiter_contacts::metrics::render(&app.store));
        let (batches, answered) = (batches - before.0, answered - before.1);
        assert!(
            answered > batches,
            "{answered} lookups in {batches} statements: none were coalesced"
        );
    }
}

/// Point reads one at a time, as light traffic sends them: on PostgreSQL each finds no
/// statement in flight and runs its own on the caller's task (`Lookups::get`), which
/// must give every answer a batch gives: the contact, NOT_FOUND, no contact by email,
/// another tenant's contact not found, and UNAUTHENTICATED for a revoked key (then
/// from memory).
async fn lone_point_reads_get_every_kind_of_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut mine = app.client();
    let other_key = app.other_tenant_key().await;
    let mut theirs = app.client_with_key(Some(&other_key));
    let contact = create(&mut mine, "Lone.Reader@Example.com", json!({"n": 1})).await;
    let foreign = create(&mut theirs, "lone.foreign@example.com", json!({})).await;
    let before = lookups(&kraiter_contacts::metrics::render(&app.store));

    for _ in 0..3 {
        let got = mine
            .get_contact(pb::GetContactRequest {
                id: contact.id.clone(),
            })
            .await
            .expect("own contact by id")
            .into_inner();
        assert_eq!(got, contact);
        let got = mine
            .get_contact_by_email(pb::GetContactByEmailRequest {
                email: "LONE.reader@example.COM".into(),
            })
            .await
            .expect("own contact by email")
            .into_inner();
        assert_eq!(got.contact, Some(contact.clone()));
    }
    let missing = mine
        .get_contact(pb::GetContactRequest {
            id: foreign.id.clone(),
        })
        .await
        .expect_err("another tenant's contact");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let none = mine
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: foreign.email.clone(),
        })
        .await
        .expect("by email, another tenant's address")
        .into_inner();
    assert_eq!(none.contact, None);
    let got = theirs
        .get_contact(pb::GetContactRequest {
            id: foreign.id.clone(),
        })
        .await
        .expect("their own contact")
        .into_inner();
    assert_eq!(got, foreign);

    if backend == Backend::Postgres {
        // One statement per lookup: alone, nothing was shared (the app's own store's
        // counts since the lookups began).
        let (batches, answered) = lookups(&kraiter_contacts::metrics::render(&app.store));
        let (batches, answered) = (batches - before.0, answered - before.1);
        assert_eq!(answered, 9.0, "lookups counted, 9 made");
        assert_eq!(answered, batches, "lone lookups ran a statement each");
    }

    // Revoked while its tenant is cached: the lone statement's key check refuses it.
    let (revoked_id, revoked) =
        kraiter_contacts::keys::create(app.store.as_ref(), &unique_tenant())
            .await
            .expect("a third tenant's key");
    let mut third = app.client_with_key(Some(&revoked));
    let missing = third
        .get_contact(pb::GetContactRequest {
            id: contact.id.clone(),
        })
        .await
        .expect_err("a third tenant sees no contact of ours");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(app.store.revoke_api_key(&revoked_id).await.expect("revoke"));
    for by_email in [false, true] {
        let refused = if by_email {
            third
                .get_contact_by_email(pb::GetContactByEmailRequest {
                    email: contact.email.clone(),
                })
                .await
                .map(|_| ())
        } else {
            third
                .get_contact(pb::GetContactRequest {
                    id: contact.id.clone(),
                })
                .await
                .map(|_| ())
        }
        .expect_err("a revoked key");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
}

conformance!(
    concurrent_point_reads_each_get_their_own_answer,
    lone_point_reads_get_every_kind_of_answer,
);
