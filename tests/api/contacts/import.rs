//! ImportContacts: modes, per-row errors beside good rows, duplicates in row order,
//! timeline entries, tenants, stream-level refusals.
//! Size, races and cancellation are in `import_scale.rs`.

use kraiter_contacts::api::pb;
use pb::ImportOutcome::{Created, Failed, Unchanged, Updated};
use prost::Message;
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::conformance;
use crate::support::imports::{batch, import, outcomes, row};
use crate::support::{
    Backend, Client, assert_status, contact_and_timeline, create, json_of, spawn_app,
};

async fn by_email(client: &mut Client, email: &str) -> Option<pb::Contact> {
    client
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: email.to_owned(),
        })
        .await
        .expect("get by email")
        .into_inner()
        .contact
}

async fn upsert_mode_creates_merges_and_leaves_unchanged_with_running_totals(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let alice = create(
        &mut client,
        "alice@example.com",
        json!({"plan": "free", "trial": true}),
    )
    .await;
    let responses = import(
        &mut client,
        vec![
            batch(
                pb::ImportMode::Unspecified,
                vec![
                    row("ALICE@example.com", json!({"plan": "pro", "trial": null})),
                    row("bob@example.com", json!({"plan": "team"})),
                ],
            ),
            batch(
                pb::ImportMode::Upsert,
                vec![row("alice@example.com", json!({"plan": "pro"}))],
            ),
        ],
    )
    .await
    .expect("import");
    assert_eq!(responses.len(), 2, "one response per batch");
    assert_eq!(outcomes(&responses), [Updated, Created, Unchanged]);
    let indexes: Vec<i64> = responses
        .iter()
        .flat_map(|r| &r.results)
        .map(|r| r.index)
        .collect();
    assert_eq!(indexes, [0, 1, 2], "indexes count across batches");
    let first = &responses[0];
    assert_eq!(
        (first.created, first.updated, first.unchanged, first.failed),
        (1, 1, 0, 0)
    );
    let last = &responses[1];
    assert_eq!(
        (last.created, last.updated, last.unchanged, last.failed),
        (1, 1, 1, 0)
    );
    assert_eq!(
        first.results[0].contact_id, alice.id,
        "merged into the existing contact"
    );
    assert_eq!(
        last.results[0].contact_id, alice.id,
        "unchanged names its contact"
    );

    let alice = by_email(&mut client, "alice@example.com")
        .await
        .expect("alice");
    assert_eq!(
        json_of(&alice),
        json!({"plan": "pro"}),
        "null removed a key"
    );
    assert_eq!(
        alice.email, "alice@example.com",
        "the stored spelling stays"
    );
    let bob = by_email(&mut client, "bob@example.com").await.expect("bob");
    assert_eq!(bob.id, first.results[1].contact_id);
    assert_eq!(json_of(&bob), json!({"plan": "team"}));
}

async fn create_only_fails_existing_addresses_and_update_only_missing_ones(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    create(&mut client, "carol@example.com", json!({"plan": "free"})).await;

    let responses = import(
        &mut client,
        vec![batch(
            pb::ImportMode::CreateOnly,
            vec![
                row("Carol@example.com", json!({"plan": "pro"})),
                row("dave@example.com", json!({"a": 1})),
            ],
        )],
    )
    .await
    .expect("create-only import");
    assert_eq!(outcomes(&responses), [Failed, Created]);
    let error = responses[0].results[0].error.clone().expect("an error");
    assert_eq!(error.code, Code::AlreadyExists as i32);
    assert_eq!(reason(&error), "CONFLICT");
    assert_eq!(responses[0].results[0].contact_id, "");
    let carol = by_email(&mut client, "carol@example.com")
        .await
        .expect("carol");
    assert_eq!(
        json_of(&carol),
        json!({"plan": "free"}),
        "create-only left carol alone"
    );

    let responses = import(
        &mut client,
        vec![batch(
            pb::ImportMode::UpdateOnly,
            vec![
                row("erin@example.com", json!({"a": 1})),
                row("carol@example.com", json!({"plan": "pro"})),
            ],
        )],
    )
    .await
    .expect("update-only import");
    assert_eq!(outcomes(&responses), [Failed, Updated]);
    let error = responses[0].results[0].error.clone().expect("an error");
    assert_eq!(error.code, Code::NotFound as i32);
    assert_eq!(reason(&error), "NOT_FOUND");
    assert_eq!(
        by_email(&mut client, "erin@example.com").await,
        None,
        "update-only created nothing"
    );
    let carol = by_email(&mut client, "carol@example.com")
        .await
        .expect("carol");
    assert_eq!(json_of(&carol), json!({"plan": "pro"}));
    assert_eq!(responses[0].failed, 1);
}

fn reason(error: &tonic_types::pb::Status) -> String {
    details(error)
        .error_info()
        .expect("ErrorInfo")
        .reason
        .clone()
}

fn details(error: &tonic_types::pb::Status) -> ErrorDetails {
    Status::with_details(
        Code::from_i32(error.code),
        error.message.clone(),
        error.encode_to_vec().into(),
    )
    .get_error_details()
}

/// Each bad row's error is exactly what UpsertContact answers for that row, and the
/// good rows around it are written.
async fn a_bad_row_fails_alone_with_the_status_upsert_contact_gives_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let big = "x".repeat(70 * 1024);
    let bad = [
        ("invalid email", row("not-an-email", json!({}))),
        (
            "oversize properties",
            row("big@example.com", json!({"big": big})),
        ),
        (
            "NUL in a string",
            row("nul@example.com", json!({"v": "a\u{0}b"})),
        ),
        (
            "NUL in a key",
            row("nulkey@example.com", json!({"a\u{0}": 1})),
        ),
        ("empty email", row("", json!({}))),
    ];
    let mut rows = vec![row("good0@example.com", json!({"n": 0}))];
    for (i, (_, bad)) in bad.iter().enumerate() {
        rows.push(bad.clone());
        rows.push(row(
            &format!("good{}@example.com", i + 1),
            json!({"n": i + 1}),
        ));
    }
    let responses = import(&mut client, vec![batch(pb::ImportMode::Upsert, rows)])
        .await
        .expect("the import goes on past bad rows");
    let results = &responses[0].results;
    assert_eq!(responses[0].failed, bad.len() as i64);
    assert_eq!(responses[0].created, bad.len() as i64 + 1);
    for (i, (what, bad)) in bad.iter().enumerate() {
        let result = &results[2 * i + 1];
        assert_eq!(result.outcome, Failed as i32, "{what}");
        let error = result
            .error
            .clone()
            .unwrap_or_else(|| panic!("{what}: no error"));
        let single = client
            .upsert_contact(pb::UpsertContactRequest {
                email: bad.email.clone(),
                properties: bad.properties.clone(),
                ..Default::default()
            })
            .await;
        let single = assert_status(single, Code::InvalidArgument, "VALIDATION_ERROR", what);
        assert_eq!(error.code, single.code() as i32, "{what}");
        assert_eq!(error.message, single.message(), "{what}");
        let call = tonic_types::pb::Status::decode(single.details()).expect("google.rpc.Status");
        assert_eq!(error, call, "{what}: the same status, details and all");
        assert!(
            details(&error).bad_request().is_some(),
            "{what}: a BadRequest names the field"
        );
    }
    for i in 0..=bad.len() {
        let email = format!("good{i}@example.com");
        let good = by_email(&mut client, &email)
            .await
            .unwrap_or_else(|| panic!("{email}"));
        assert_eq!(json_of(&good), json!({"n": i}), "{email}");
    }
}

/// A duplicate address merges in row order: inside a batch (the first row creates,
/// the second updates the same contact) and across batches.
async fn duplicate_addresses_merge_in_row_order_within_and_across_batches(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let responses = import(
        &mut client,
        vec![
            batch(
                pb::ImportMode::Upsert,
                vec![
                    row("dup@example.com", json!({"a": 1, "b": 1})),
                    row("DUP@example.com", json!({"b": 2, "c": 2})),
                    row("dup@example.com", json!({"a": null})),
                ],
            ),
            batch(
                pb::ImportMode::Unspecified,
                vec![row("Dup@Example.com", json!({"d": 3}))],
            ),
        ],
    )
    .await
    .expect("import");
    assert_eq!(outcomes(&responses), [Created, Updated, Updated, Updated]);
    let ids: Vec<&str> = responses
        .iter()
        .flat_map(|r| &r.results)
        .map(|r| r.contact_id.as_str())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one contact: {ids:?}");
    let (contact, entries) = contact_and_timeline(&mut client, ids[0]).await;
    assert_eq!(json_of(&contact), json!({"b": 2, "c": 2, "d": 3}));
    assert_eq!(contact.email, "dup@example.com", "the first row's spelling");
    let types: Vec<&str> = entries.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(
        types,
        [
            "contact.created",
            "contact.updated",
            "contact.updated",
            "contact.updated"
        ],
        "an entry per written row"
    );
    let listed = crate::support::pages(&mut client, pb::ListContactsRequest::default()).await;
    let all: usize = listed.iter().map(|p| p.contacts.len()).sum();
    assert_eq!(all, 1, "no duplicate contact");
}

/// Every written row leaves its entry: `contact.created` with the row's properties,
/// `contact.updated` with each changed key before and after; an unchanged or failed
/// row leaves none.
async fn each_written_row_leaves_its_timeline_entry(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let existing = create(&mut client, "tl@example.com", json!({"plan": "free"})).await;
    let responses = import(
        &mut client,
        vec![batch(
            pb::ImportMode::Upsert,
            vec![
                row("tl@example.com", json!({"plan": "pro"})),
                row("tl@example.com", json!({"plan": "pro"})),
                row("tl-new@example.com", json!({"x": 1})),
            ],
        )],
    )
    .await
    .expect("import");
    assert_eq!(outcomes(&responses), [Updated, Unchanged, Created]);
    let (_, entries) = contact_and_timeline(&mut client, &existing.id).await;
    let updated: Vec<_> = entries
        .iter()
        .filter(|e| e.r#type == "contact.updated")
        .collect();
    assert_eq!(updated.len(), 1, "the unchanged row left nothing");
    let data = Value::Object(kraiter_contacts::client::properties_json(
        updated[0].data.as_ref(),
    ));
    assert_eq!(
        data,
        json!({"properties": {"plan": {"before": "free", "after": "pro"}}})
    );
    let new_id = &responses[0].results[2].contact_id;
    let (contact, entries) = contact_and_timeline(&mut client, new_id).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].r#type, "contact.created");
    let data = Value::Object(kraiter_contacts::client::properties_json(
        entries[0].data.as_ref(),
    ));
    assert_eq!(
        data,
        json!({"email": "tl-new@example.com", "properties": {"x": 1}})
    );
    assert_eq!(
        entries[0].timestamp, contact.created_at,
        "dated when the contact was"
    );
}

/// Tenant B importing A's addresses creates B's own contacts and leaves A's alone.
async fn an_import_writes_only_its_own_tenants_contacts(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut a = app.client();
    let mut b = app.other_tenant_client().await;
    let alice = create(&mut a, "alice@example.com", json!({"tenant": "a"})).await;
    let responses = import(
        &mut b,
        vec![batch(
            pb::ImportMode::Upsert,
            vec![row("alice@example.com", json!({"tenant": "b"}))],
        )],
    )
    .await
    .expect("import");
    assert_eq!(outcomes(&responses), [Created], "A's contact is not B's");
    assert_ne!(responses[0].results[0].contact_id, alice.id);
    let in_a = by_email(&mut a, "alice@example.com")
        .await
        .expect("A's alice");
    assert_eq!(json_of(&in_a), json!({"tenant": "a"}));
    let in_b = by_email(&mut b, "alice@example.com")
        .await
        .expect("B's alice");
    assert_eq!(json_of(&in_b), json!({"tenant": "b"}));
    let responses = import(
        &mut b,
        vec![batch(
            pb::ImportMode::UpdateOnly,
            vec![row("only-in-a@example.com", json!({}))],
        )],
    )
    .await
    .expect("import");
    assert_eq!(outcomes(&responses), [Failed]);
    create(&mut a, "only-in-a@example.com", json!({})).await;
}

/// The stream-level refusals: more than 1,000 rows in a message, and a mode that
/// changes mid-import, end the import naming the field; earlier batches stay.
async fn an_oversize_batch_or_a_changed_mode_ends_the_import_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let rows = (0..1001)
        .map(|i| row(&format!("r{i}@example.com"), json!({})))
        .collect();
    let result = import(&mut client, vec![batch(pb::ImportMode::Upsert, rows)]).await;
    let status = assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "1001 rows",
    );
    let field = &status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations[0];
    assert_eq!(field.field, "rows");
    assert_eq!(
        by_email(&mut client, "r0@example.com").await,
        None,
        "nothing of it written"
    );

    let mut responses = client
        .import_contacts(tokio_stream::iter(vec![
            batch(
                pb::ImportMode::CreateOnly,
                vec![row("m1@example.com", json!({}))],
            ),
            batch(
                pb::ImportMode::Upsert,
                vec![row("m2@example.com", json!({}))],
            ),
        ]))
        .await
        .expect("import starts")
        .into_inner();
    let first = responses
        .message()
        .await
        .expect("the first batch")
        .expect("a response");
    assert_eq!(outcomes(&[first]), [Created]);
    let status = assert_status(
        responses.message().await,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "a changed mode",
    );
    let field = &status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations[0];
    assert_eq!(field.field, "mode");
    assert!(
        by_email(&mut client, "m1@example.com").await.is_some(),
        "acknowledged batch kept"
    );
    assert_eq!(by_email(&mut client, "m2@example.com").await, None);
}

conformance!(
    upsert_mode_creates_merges_and_leaves_unchanged_with_running_totals,
    create_only_fails_existing_addresses_and_update_only_missing_ones,
    a_bad_row_fails_alone_with_the_status_upsert_contact_gives_it,
    duplicate_addresses_merge_in_row_order_within_and_across_batches,
    each_written_row_leaves_its_timeline_entry,
    an_import_writes_only_its_own_tenants_contacts,
    an_oversize_batch_or_a_changed_mode_ends_the_import_naming_the_field,
);
