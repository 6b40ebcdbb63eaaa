//! Point reads made at the same time: on PostgreSQL they share statements
//! (`store/postgres/lookups.rs`), so each caller must still get exactly its own
//! answer: its contact, NOT_FOUND, `contact: None` or UNAUTHENTICATED, never another
//! caller's or another tenant's.

use kraiter_contacts::client::pb;
use serde_json::json;
use tokio::task::JoinSet;
use tonic::Code;

use crate::conformance;
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
    let sample = |name: &str| {
        body.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
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
        // Other tests share these counters; they can only add single lookups, so more
        // lookups than statements means some of these calls shared one.
        let (batches, answered) = lookups(&kraiter_contacts::metrics::render(&app.store));
        let (batches, answered) = (batches - before.0, answered - before.1);
        assert!(
            answered > batches,
            "{answered} lookups in {batches} statements: none were coalesced"
        );
    }
}

conformance!(concurrent_point_reads_each_get_their_own_answer);
