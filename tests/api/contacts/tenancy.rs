use kraiter_contacts::api::pb;
use serde_json::json;
use tonic::Code;

use crate::conformance;
use crate::support::{Backend, assert_status, create, props, spawn_app};

async fn a_tenant_never_sees_or_touches_another_tenants_contacts(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut a = app.client();
    let mut b = app.other_tenant_client().await;
    let alice = create(&mut a, "alice@example.com", json!({"secret": "tenant-a"})).await;

    let result = b
        .get_contact(pb::GetContactRequest {
            id: alice.id.clone(),
        })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "get by another tenant");
    let found = b
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: alice.email.clone(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(found.contact, None, "getByEmail in another tenant");
    let result = b
        .update_contact(pb::UpdateContactRequest {
            id: alice.id.clone(),
            email: None,
            properties: Some(props(json!({"x": 1}))),
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::NotFound,
        "NOT_FOUND",
        "update by another tenant",
    );
    let result = b
        .delete_contact(pb::DeleteContactRequest {
            id: alice.id.clone(),
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::NotFound,
        "NOT_FOUND",
        "delete by another tenant",
    );
    let result = b
        .list_contact_timeline(pb::ListContactTimelineRequest {
            id: alice.id.clone(),
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::NotFound,
        "NOT_FOUND",
        "timeline of another tenant",
    );
    for search in ["", "alice", "tenant-a"] {
        let mut stream = b
            .list_contacts(pb::ListContactsRequest {
                search: search.into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        let page = stream.message().await.expect("page").expect("one page");
        assert!(
            page.contacts.is_empty(),
            "list/search {search:?} in another tenant"
        );
    }
    // The same address is a different contact in another tenant.
    let other_alice = create(&mut b, "alice@example.com", json!({})).await;
    assert_ne!(other_alice.id, alice.id);
    let still = a
        .get_contact(pb::GetContactRequest {
            id: alice.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(still, alice, "untouched by the other tenant");
}

async fn missing_wrong_and_revoked_keys_are_unauthenticated(backend: Backend) {
    let app = spawn_app(backend).await;
    let request = || pb::GetContactByEmailRequest {
        email: "a@example.com".into(),
    };
    let result = app
        .client_with_key(None)
        .get_contact_by_email(request())
        .await;
    assert_status(result, Code::Unauthenticated, "UNAUTHORISED", "no key");
    let result = app
        .client_with_key(Some("kr_not-a-real-key"))
        .get_contact_by_email(request())
        .await;
    assert_status(result, Code::Unauthenticated, "UNAUTHORISED", "wrong key");
    let result = app
        .client_with_key(Some(&"x".repeat(1000)))
        .get_contact_by_email(request())
        .await;
    assert_status(
        result,
        Code::Unauthenticated,
        "UNAUTHORISED",
        "oversize key",
    );

    let tenant = crate::support::unique_tenant();
    let (key_id, key) = kraiter_contacts::keys::create(app.store.as_ref(), &tenant)
        .await
        .expect("key");
    let mut client = app.client_with_key(Some(&key));
    client
        .get_contact_by_email(request())
        .await
        .expect("a fresh key works");
    let existing = create(&mut client, "kept@example.com", json!({"v": 1})).await;
    assert!(app.store.revoke_api_key(&key_id).await.expect("revoke"));
    let result = client.get_contact_by_email(request()).await;
    assert_status(
        result,
        Code::Unauthenticated,
        "UNAUTHORISED",
        "revoked key, next call",
    );

    // A revoked key writes nothing either: creates and updates are checked in the
    // statement that writes.
    let result = client
        .create_contact(pb::CreateContactRequest {
            email: "late@example.com".into(),
            properties: None,
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::Unauthenticated,
        "UNAUTHORISED",
        "create with a revoked key",
    );
    let result = client
        .update_contact(pb::UpdateContactRequest {
            id: existing.id.clone(),
            email: None,
            properties: Some(props(json!({"v": 2}))),
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::Unauthenticated,
        "UNAUTHORISED",
        "update with a revoked key",
    );
    let (_, live) = kraiter_contacts::keys::create(app.store.as_ref(), &tenant)
        .await
        .expect("second key");
    let mut owner = app.client_with_key(Some(&live));
    let late = owner
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: "late@example.com".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(late.contact, None, "the revoked key created nothing");
    let kept = owner
        .get_contact(pb::GetContactRequest {
            id: existing.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(kept, existing, "the revoked key changed nothing");
}

conformance!(
    a_tenant_never_sees_or_touches_another_tenants_contacts,
    missing_wrong_and_revoked_keys_are_unauthenticated,
);
