//! UpsertContact: create by email, or merge into the contact that has it, atomically.

use kraiter_contacts::api::pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::conformance;
use crate::support::{Backend, Client, assert_status, create, json_of, props, spawn_app, timeline};

async fn upsert(client: &mut Client, email: &str, properties: Value) -> (pb::Contact, bool) {
    let response = client
        .upsert_contact(pb::UpsertContactRequest {
            email: email.to_owned(),
            properties: Some(props(properties)),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("upsert {email}: {status:?}"))
        .into_inner();
    (response.contact.expect("a contact"), response.created)
}

/// The types of the contact's timeline entries, oldest first.
async fn entry_types(client: &mut Client, id: &str) -> Vec<String> {
    let request = pb::ListContactTimelineRequest {
        id: id.to_owned(),
        order: pb::TimelineOrder::OldestFirst as i32,
        ..Default::default()
    };
    let pages = timeline(client, request).await;
    pages
        .into_iter()
        .flat_map(|page| page.entries)
        .map(|entry| entry.r#type)
        .collect()
}

async fn upsert_creates_then_merges_by_email_ignoring_case(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let (created, was_new) = upsert(
        &mut client,
        "Ann@Example.com",
        json!({"plan": "free", "seats": 1, "gone": null}),
    )
    .await;
    assert!(was_new, "the first upsert creates");
    assert_eq!(created.email, "Ann@Example.com");
    assert_eq!(json_of(&created), json!({"plan": "free", "seats": 1}));

    let (merged, was_new) = upsert(
        &mut client,
        "ann@example.COM",
        json!({"plan": "pro", "seats": null, "team": "a"}),
    )
    .await;
    assert!(!was_new, "the second finds the contact by its address");
    assert_eq!(merged.id, created.id);
    assert_eq!(merged.email, "Ann@Example.com", "the stored spelling stays");
    assert_eq!(json_of(&merged), json!({"plan": "pro", "team": "a"}));
    assert_ne!(merged.etag, created.etag, "a write changes the etag");

    // Nothing new: nothing written, same etag, no entry.
    let (same, was_new) = upsert(&mut client, "ANN@example.com", json!({"plan": "pro"})).await;
    assert!(!was_new);
    assert_eq!(
        same.etag, merged.etag,
        "an upsert that changes nothing writes nothing"
    );
    assert_eq!(
        entry_types(&mut client, &created.id).await,
        ["contact.created", "contact.updated"]
    );
    let fetched = client
        .get_contact(pb::GetContactRequest {
            id: created.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched, same, "the answer is what is stored");
}

async fn twenty_concurrent_upserts_of_one_new_email_make_one_contact_with_every_key(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    for round in 0..3 {
        let email = format!("upsert-race-{round}@example.com");
        let mut tasks = Vec::new();
        for i in 0..20 {
            let mut client = app.client();
            let spelled = if i % 2 == 0 {
                email.clone()
            } else {
                email.to_uppercase()
            };
            tasks.push(tokio::spawn(async move {
                upsert(&mut client, &spelled, json!({ format!("k{i}"): i })).await
            }));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut created = 0;
        for task in tasks {
            let (contact, was_new) = task.await.expect("task");
            ids.insert(contact.id);
            created += usize::from(was_new);
        }
        assert_eq!(ids.len(), 1, "round {round}: one contact");
        assert_eq!(created, 1, "round {round}: exactly one `created`");
        let id = ids.into_iter().next().expect("an id");
        let mut client = app.client();
        let contact = client
            .get_contact(pb::GetContactRequest { id: id.clone() })
            .await
            .expect("get")
            .into_inner();
        let object = json_of(&contact);
        for i in 0..20 {
            assert_eq!(object[format!("k{i}")], json!(i), "round {round}: {object}");
        }
        let types = entry_types(&mut client, &id).await;
        assert_eq!(
            types.len(),
            20,
            "round {round}: an entry per upsert: {types:?}"
        );
        assert_eq!(types[0], "contact.created");
    }
}

async fn upsert_refuses_what_create_and_update_refuse(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    create(
        &mut client,
        "full@example.com",
        json!({"a": "x".repeat(60_000)}),
    )
    .await;
    let cases = [
        ("no email", "", json!({}), "email"),
        ("bad email", "not-an-address", json!({}), "email"),
        (
            "NUL in a value",
            "nul@example.com",
            json!({"a": "x\u{0}y"}),
            "properties.a",
        ),
        (
            "merged too large",
            "full@example.com",
            json!({"b": "y".repeat(10_000)}),
            "properties",
        ),
    ];
    for (what, email, properties, field) in cases {
        let result = client
            .upsert_contact(pb::UpsertContactRequest {
                email: email.to_owned(),
                properties: Some(props(properties)),
                ..Default::default()
            })
            .await;
        let status = assert_status(result, Code::InvalidArgument, "VALIDATION_ERROR", what);
        assert!(
            status.message().contains(field),
            "{what}: names `{field}`: {status:?}"
        );
    }
    let listed = crate::support::pages(&mut client, pb::ListContactsRequest::default()).await;
    let count: usize = listed.iter().map(|p| p.contacts.len()).sum();
    assert_eq!(count, 1, "nothing was created by a refused upsert");
}

async fn upsert_stays_in_the_callers_tenant(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut a = app.client();
    let (mine, _) = upsert(&mut a, "shared@example.com", json!({"owner": "a"})).await;
    let mut b = app.other_tenant_client().await;
    let (theirs, created) = upsert(&mut b, "shared@example.com", json!({"owner": "b"})).await;
    assert!(created, "tenant B gets its own contact");
    assert_ne!(theirs.id, mine.id);
    let again = a
        .get_contact(pb::GetContactRequest { id: mine.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        json_of(&again),
        json!({"owner": "a"}),
        "A's contact untouched"
    );
}

conformance!(
    upsert_creates_then_merges_by_email_ignoring_case,
    twenty_concurrent_upserts_of_one_new_email_make_one_contact_with_every_key,
    upsert_refuses_what_create_and_update_refuse,
    upsert_stays_in_the_callers_tenant,
);
