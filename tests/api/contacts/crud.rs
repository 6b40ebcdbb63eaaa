use kraiter_contacts::api::pb;
use serde_json::json;
use tonic::Code;

use crate::conformance;
use crate::support::{
    Backend, assert_status, contact_and_timeline, create, json_of, props, spawn_app,
};

async fn create_returns_the_new_contact_with_defaults(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(
        &mut client,
        " Alice@Example.com ",
        json!({"firstName": "Alice", "plan": "pro", "n": 3}),
    )
    .await;
    assert!(contact.id.starts_with("con_"), "{}", contact.id);
    assert_eq!(contact.email, "Alice@Example.com", "trimmed, spelling kept");
    assert_eq!(
        json_of(&contact),
        json!({"firstName": "Alice", "plan": "pro", "n": 3})
    );
    assert!(!contact.suppressed);
    assert!(!contact.unsubscribed);
    assert!(contact.created_at.is_some());
    assert_eq!(contact.created_at, contact.updated_at);

    let fetched = client
        .get_contact(pb::GetContactRequest {
            id: contact.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched, contact, "get returns what create returned");
}

async fn create_without_properties_stores_an_empty_object(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = client
        .create_contact(pb::CreateContactRequest {
            email: "bob@example.com".into(),
            properties: None,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(json_of(&contact), json!({}));
}

async fn create_contact_returns_already_exists_for_same_email_in_other_case(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    create(&mut client, "alice@example.com", json!({})).await;
    let result = client
        .create_contact(pb::CreateContactRequest {
            email: "ALICE@example.COM".into(),
            properties: None,
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::AlreadyExists,
        "CONFLICT",
        "same email, other case",
    );
}

async fn ids_sort_by_creation(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            create(&mut client, &format!("u{i}@example.com"), json!({}))
                .await
                .id,
        );
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
}

async fn get_by_email_finds_any_case_and_returns_unset_when_absent(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "Carol@Example.com", json!({})).await;
    let found = client
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: "carol@EXAMPLE.com".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(found.contact, Some(contact));
    let missing = client
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: "nobody@example.com".into(),
        })
        .await
        .expect("a miss is not an error")
        .into_inner();
    assert_eq!(missing.contact, None);
}

async fn get_unknown_contact_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let result = client
        .get_contact(pb::GetContactRequest {
            id: "con_01JD0000000000000000000000".into(),
        })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "unknown id");
}

async fn update_merges_properties_key_by_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(
        &mut client,
        "dave@example.com",
        json!({"plan": "pro", "keep": 1, "drop": "x"}),
    )
    .await;
    let updated = client
        .update_contact(pb::UpdateContactRequest {
            id: contact.id.clone(),
            email: None,
            properties: Some(props(
                json!({"plan": "enterprise", "drop": null, "new": [1, "two"]}),
            )),
            ..Default::default()
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        json_of(&updated),
        json!({"plan": "enterprise", "keep": 1, "new": [1, "two"]})
    );
    assert_eq!(
        updated.email, "dave@example.com",
        "absent email is unchanged"
    );
    assert_eq!(updated.created_at, contact.created_at);
    let micros = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos));
    assert!(micros(&updated.updated_at) >= micros(&contact.updated_at));
    let fetched = client
        .get_contact(pb::GetContactRequest { id: contact.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched, updated, "the merge was stored");
}

async fn update_changes_email_and_refuses_a_taken_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let erin = create(&mut client, "erin@example.com", json!({"a": 1})).await;
    create(&mut client, "frank@example.com", json!({})).await;
    let updated = client
        .update_contact(pb::UpdateContactRequest {
            id: erin.id.clone(),
            email: Some("Erin@New.example.com".into()),
            properties: None,
            ..Default::default()
        })
        .await
        .expect("update email")
        .into_inner();
    assert_eq!(updated.email, "Erin@New.example.com");
    assert_eq!(
        json_of(&updated),
        json!({"a": 1}),
        "absent properties are unchanged"
    );
    let by_new = client
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: "erin@new.example.com".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(by_new.contact.map(|c| c.id), Some(erin.id.clone()));
    let by_old = client
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: "erin@example.com".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(by_old.contact, None, "the old address is free again");

    let result = client
        .update_contact(pb::UpdateContactRequest {
            id: erin.id.clone(),
            email: Some("FRANK@example.com".into()),
            properties: None,
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::AlreadyExists,
        "CONFLICT",
        "email of another contact",
    );
    let unchanged = client
        .get_contact(pb::GetContactRequest { id: erin.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(unchanged, updated, "a refused update writes nothing");
}

async fn update_unknown_contact_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let result = client
        .update_contact(pb::UpdateContactRequest {
            id: "con_01JD0000000000000000000000".into(),
            email: None,
            properties: Some(props(json!({"a": 1}))),
            ..Default::default()
        })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "update unknown");
}

async fn update_with_nothing_to_change_returns_the_contact_unchanged(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "gina@example.com", json!({"a": 1})).await;
    let same = client
        .update_contact(pb::UpdateContactRequest {
            id: contact.id.clone(),
            email: None,
            properties: Some(props(json!({"a": 1}))),
            ..Default::default()
        })
        .await
        .expect("no-op update")
        .into_inner();
    assert_eq!(same, contact);
}

/// An update whose values are those already stored changes nothing: the answer is
/// the stored contact, `updated_at` stays, and no `contact.updated` entry is written.
async fn an_update_to_the_same_values_writes_no_timeline_entry(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(
        &mut client,
        "ivy@example.com",
        json!({"a": 1, "tags": ["x", {"y": null}], "name": "Ivy"}),
    )
    .await;
    let before = contact_and_timeline(&mut client, &contact.id).await;
    let types: Vec<&str> = before.1.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, vec!["contact.created"]);
    let same = json!({"a": 1, "tags": ["x", {"y": null}], "name": "Ivy"});
    let cases: Vec<(&str, Option<&str>, Option<serde_json::Value>)> = vec![
        ("nothing at all", None, None),
        ("the same properties", None, Some(same.clone())),
        (
            "some of the properties, unchanged",
            None,
            Some(json!({"a": 1})),
        ),
        ("the same email", Some("ivy@example.com"), None),
        (
            "the same email and properties",
            Some("ivy@example.com"),
            Some(same),
        ),
        (
            "removing a key that is not there",
            None,
            Some(json!({"gone": null})),
        ),
    ];
    for (why, email, properties) in cases {
        let answer = client
            .update_contact(pb::UpdateContactRequest {
                id: contact.id.clone(),
                email: email.map(str::to_owned),
                properties: properties.map(props),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("{why}: {status:?}"))
            .into_inner();
        assert_eq!(answer, contact, "{why}: the answer is the stored contact");
        let after = contact_and_timeline(&mut client, &contact.id).await;
        assert_eq!(after.0, before.0, "{why}: the contact changed");
        assert_eq!(after.1, before.1, "{why}: the timeline changed");
    }
}

async fn delete_erases_the_contact(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "hank@example.com", json!({})).await;
    let deleted = client
        .delete_contact(pb::DeleteContactRequest {
            id: contact.id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.id, contact.id);
    let result = client
        .get_contact(pb::GetContactRequest {
            id: contact.id.clone(),
        })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "get after delete");
    let result = client
        .delete_contact(pb::DeleteContactRequest {
            id: contact.id.clone(),
            ..Default::default()
        })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "delete twice");
    let result = client
        .list_contact_timeline(pb::ListContactTimelineRequest {
            id: contact.id,
            ..Default::default()
        })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "timeline after delete");
    // The address can be used again.
    create(&mut client, "hank@example.com", json!({})).await;
}

conformance!(
    create_returns_the_new_contact_with_defaults,
    create_without_properties_stores_an_empty_object,
    create_contact_returns_already_exists_for_same_email_in_other_case,
    ids_sort_by_creation,
    get_by_email_finds_any_case_and_returns_unset_when_absent,
    get_unknown_contact_is_not_found,
    update_merges_properties_key_by_key,
    update_changes_email_and_refuses_a_taken_one,
    update_unknown_contact_is_not_found,
    update_with_nothing_to_change_returns_the_contact_unchanged,
    an_update_to_the_same_values_writes_no_timeline_entry,
    delete_erases_the_contact,
);
