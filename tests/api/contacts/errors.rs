//! Bad input always gets a clean status that names the field; nothing reaches INTERNAL.

use kraiter_contacts::api::pb;
use prost_types::value::Kind;
use serde_json::{Value, json};
use tonic::Code;

use crate::conformance;
use crate::support::{
    Backend, assert_status, contact_and_timeline, create, json_of, props, spawn_app,
};

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("leaf"), |inner, _| json!({ "k": inner }))
}

fn number_struct(value: f64) -> prost_types::Struct {
    let mut s = prost_types::Struct::default();
    s.fields.insert(
        "n".into(),
        prost_types::Value {
            kind: Some(Kind::NumberValue(value)),
        },
    );
    s
}

async fn invalid_create_requests_are_invalid_argument_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let long_local = format!("{}@example.com", "a".repeat(250));
    let cases: Vec<(&str, String, Option<prost_types::Struct>, &str)> = vec![
        ("empty email", String::new(), None, "email"),
        ("no at sign", "alice".into(), None, "email"),
        ("no domain dot", "alice@localhost".into(), None, "email"),
        ("NUL in email", "al\0ice@example.com".into(), None, "email"),
        (
            "control char in email",
            "al\u{7}ice@example.com".into(),
            None,
            "email",
        ),
        ("email over 254 chars", long_local, None, "email"),
        (
            "NUL in property value",
            "p1@example.com".into(),
            Some(props(json!({"a": "x\u{0}y"}))),
            "properties.a",
        ),
        (
            "NUL in property key",
            "p2@example.com".into(),
            Some(props(json!({"a\u{0}": 1}))),
            "properties",
        ),
        (
            "empty property key",
            "p3@example.com".into(),
            Some(props(json!({"": 1}))),
            "properties",
        ),
        (
            "properties too deep",
            "p4@example.com".into(),
            Some(props(json!({"a": nested(20)}))),
            "properties.a",
        ),
        (
            "properties too big",
            "p5@example.com".into(),
            Some(props(json!({"a": "x".repeat(70_000)}))),
            "properties",
        ),
        (
            "huge key",
            "p6@example.com".into(),
            Some(props(json!({"k".repeat(1000): 1}))),
            "properties.",
        ),
        (
            "NaN",
            "p7@example.com".into(),
            Some(number_struct(f64::NAN)),
            "properties.n",
        ),
        (
            "infinity",
            "p8@example.com".into(),
            Some(number_struct(f64::INFINITY)),
            "properties.n",
        ),
    ];
    for (why, email, properties, field) in cases {
        let result = client
            .create_contact(pb::CreateContactRequest {
                email,
                properties,
                ..Default::default()
            })
            .await;
        let status = assert_status(result, Code::InvalidArgument, "VALIDATION_ERROR", why);
        use tonic_types::StatusExt;
        let bad = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("{why}: no BadRequest"));
        assert!(
            bad.field_violations
                .iter()
                .any(|v| v.field.starts_with(field)),
            "{why}: violations {:?} should name {field}",
            bad.field_violations
        );
    }
    // Nothing was written by any of them.
    let mut stream = client
        .list_contacts(pb::ListContactsRequest::default())
        .await
        .expect("list")
        .into_inner();
    let page = stream.message().await.expect("page").expect("one page");
    assert!(page.contacts.is_empty(), "no partial writes");
}

async fn invalid_ids_and_emails_on_reads_are_invalid_argument(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    for (why, id) in [
        ("empty id", ""),
        ("wrong prefix", "snd_01JD0000000000000000000000"),
        ("garbage", "con_!!"),
        ("NUL", "con_\0"),
    ] {
        let result = client
            .get_contact(pb::GetContactRequest { id: id.into() })
            .await;
        assert_status(result, Code::InvalidArgument, "VALIDATION_ERROR", why);
        let result = client
            .delete_contact(pb::DeleteContactRequest {
                id: id.into(),
                ..Default::default()
            })
            .await;
        assert_status(result, Code::InvalidArgument, "VALIDATION_ERROR", why);
    }
    let result = client
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: "not an email".into(),
        })
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "bad email lookup",
    );
}

/// Refused updates, alone or mixed with valid parts, change neither the contact (its
/// email, properties, flags or `updated_at`) nor its timeline.
async fn invalid_updates_write_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "u@example.com", json!({"a": 1})).await;
    create(&mut client, "taken@example.com", json!({})).await;
    // Half of what the last case merges: it fits alone, so the other half's refusal
    // is about the merged result.
    client
        .update_contact(pb::UpdateContactRequest {
            id: contact.id.clone(),
            email: None,
            properties: Some(props(json!({"x": "z".repeat(40_000)}))),
            ..Default::default()
        })
        .await
        .expect("the first half fits");
    let before = contact_and_timeline(&mut client, &contact.id).await;
    // The code and ErrorInfo reason each refusal gets.
    type Expected = (Code, &'static str);
    const INVALID: Expected = (Code::InvalidArgument, "VALIDATION_ERROR");
    let cases: Vec<(&str, Option<&str>, Value, Expected)> = vec![
        ("bad email", Some("nope"), json!({"a": 2}), INVALID),
        (
            "NUL value, with a valid new email",
            Some("new@example.com"),
            json!({"a": 2, "b": "\u{0}"}),
            INVALID,
        ),
        ("too deep", None, json!({"a": nested(30)}), INVALID),
        (
            "merged too big",
            None,
            json!({"y": "z".repeat(40_000)}),
            INVALID,
        ),
        (
            "another contact's email",
            Some("TAKEN@example.com"),
            json!({"a": 2}),
            (Code::AlreadyExists, "CONFLICT"),
        ),
    ];
    for (why, email, properties, (code, reason)) in cases {
        let result = client
            .update_contact(pb::UpdateContactRequest {
                id: contact.id.clone(),
                email: email.map(str::to_owned),
                properties: Some(props(properties)),
                ..Default::default()
            })
            .await;
        assert_status(result, code, reason, why);
        let after = contact_and_timeline(&mut client, &contact.id).await;
        // Compared whole; on failure, shown without its 40 kB value.
        assert!(
            after.0 == before.0,
            "{why}: the contact changed, email {} -> {}, properties {:?} -> {:?}, updated_at {:?} -> {:?}",
            before.0.email,
            after.0.email,
            json_of(&before.0)
                .as_object()
                .map(|p| p.keys().collect::<Vec<_>>()),
            json_of(&after.0)
                .as_object()
                .map(|p| p.keys().collect::<Vec<_>>()),
            before.0.updated_at,
            after.0.updated_at,
        );
        let types = |entries: &[pb::TimelineEntry]| -> Vec<String> {
            entries.iter().map(|e| e.r#type.clone()).collect()
        };
        assert!(
            after.1 == before.1,
            "{why}: the timeline changed: {:?} -> {:?}",
            types(&before.1),
            types(&after.1)
        );
    }
}

async fn garbage_foreign_and_tampered_cursors_are_invalid_argument(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    for i in 0..3 {
        create(&mut client, &format!("c{i}@example.com"), json!({})).await;
    }
    let mut stream = client
        .list_contacts(pb::ListContactsRequest {
            limit: 1,
            max_pages: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let cursor = stream
        .message()
        .await
        .expect("page")
        .expect("page")
        .next_cursor;
    let mut tampered = cursor.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let mut other = app.other_tenant_client().await;
    let cases = [
        ("garbage", "not a cursor!".to_owned()),
        ("base64 garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()),
        ("truncated", cursor[..cursor.len() / 2].to_owned()),
        ("tampered", tampered),
        ("huge", "A".repeat(100_000)),
    ];
    for (why, cursor) in cases {
        let result = client
            .list_contacts(pb::ListContactsRequest {
                cursor,
                ..Default::default()
            })
            .await;
        assert_status(result, Code::InvalidArgument, "VALIDATION_ERROR", why);
    }
    let result = other
        .list_contacts(pb::ListContactsRequest {
            cursor: cursor.clone(),
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "another tenant's cursor",
    );
    let result = client
        .list_contact_timeline(pb::ListContactTimelineRequest {
            id: "con_01JD0000000000000000000000".into(),
            cursor,
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "a list cursor on the timeline",
    );
}

async fn invalid_search_terms_are_invalid_argument(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    for (why, search) in [
        ("control char", "a\u{1}b".to_owned()),
        ("NUL", "\0".to_owned()),
        ("too long", "x".repeat(300)),
    ] {
        let result = client
            .list_contacts(pb::ListContactsRequest {
                search,
                ..Default::default()
            })
            .await;
        assert_status(result, Code::InvalidArgument, "VALIDATION_ERROR", why);
    }
}

conformance!(
    invalid_create_requests_are_invalid_argument_naming_the_field,
    invalid_ids_and_emails_on_reads_are_invalid_argument,
    invalid_updates_write_nothing,
    garbage_foreign_and_tampered_cursors_are_invalid_argument,
    invalid_search_terms_are_invalid_argument,
);
