//! Bad input always gets a clean status that names the field; nothing reaches INTERNAL.

use kraiter_contacts::api::pb;
use prost_types::value::Kind;
use serde_json::{Value, json};
use tonic::Code;

use crate::conformance;
use crate::support::{Backend, assert_status, create, props, spawn_app};

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
            .create_contact(pb::CreateContactRequest { email, properties })
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
            .delete_contact(pb::DeleteContactRequest { id: id.into() })
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

async fn invalid_updates_write_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "u@example.com", json!({"a": 1})).await;
    let cases: Vec<(&str, Option<String>, Option<prost_types::Struct>)> = vec![
        (
            "bad email",
            Some("nope".into()),
            Some(props(json!({"a": 2}))),
        ),
        (
            "NUL value",
            None,
            Some(props(json!({"a": 2, "b": "\u{0}"}))),
        ),
        ("too deep", None, Some(props(json!({"a": nested(30)})))),
    ];
    for (why, email, properties) in cases {
        let result = client
            .update_contact(pb::UpdateContactRequest {
                id: contact.id.clone(),
                email,
                properties,
            })
            .await;
        assert_status(result, Code::InvalidArgument, "VALIDATION_ERROR", why);
    }
    // A merge whose result is too big is refused too, though each part fits.
    for key in ["x", "y"] {
        let big = props(json!({ key: "z".repeat(40_000) }));
        let result = client
            .update_contact(pb::UpdateContactRequest {
                id: contact.id.clone(),
                email: None,
                properties: Some(big),
            })
            .await;
        if key == "y" {
            assert_status(
                result,
                Code::InvalidArgument,
                "VALIDATION_ERROR",
                "merged too big",
            );
        } else {
            result.expect("first half fits");
        }
    }
    let fetched = client
        .get_contact(pb::GetContactRequest { id: contact.id })
        .await
        .expect("get")
        .into_inner();
    let keys: Vec<String> = fetched
        .properties
        .expect("properties")
        .fields
        .into_keys()
        .collect();
    assert_eq!(keys, vec!["a".to_owned(), "x".to_owned()]);
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
