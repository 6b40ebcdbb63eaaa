//! BatchGetContacts: the answer follows the request (ids, then emails; duplicates
//! twice; missing keys as given), keys are checked with their index, at most 1,000
//! of them, an answer over 4 MiB is refused whole, and another tenant's or a revoked
//! key's caller reads nothing.

use kraiter_contacts::api::pb;
use kraiter_contacts::store::Access;
use prost::Message;
use serde_json::json;
use tonic::Code;

use crate::conformance;
use crate::support::{Backend, Client, assert_status, create, spawn_app, unique_tenant};

fn request(ids: &[&str], emails: &[&str]) -> pb::BatchGetContactsRequest {
    pb::BatchGetContactsRequest {
        ids: ids.iter().map(|s| s.to_string()).collect(),
        emails: emails.iter().map(|s| s.to_string()).collect(),
    }
}

async fn batch_get(
    client: &mut Client,
    request: pb::BatchGetContactsRequest,
) -> pb::BatchGetContactsResponse {
    client
        .batch_get_contacts(request)
        .await
        .unwrap_or_else(|status| panic!("batch get: {status:?}"))
        .into_inner()
}

fn ids(response: &pb::BatchGetContactsResponse) -> Vec<&str> {
    response.contacts.iter().map(|c| c.id.as_str()).collect()
}

/// A well-formed id no contact has.
const ABSENT: &str = "con_01J00000000000000000000000";

async fn the_answer_follows_the_request_with_duplicates_and_missing_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let alice = create(&mut client, "Alice@Example.com", json!({"n": 1})).await;
    let bob = create(&mut client, "bob@example.com", json!({"n": 2})).await;
    let carol = create(&mut client, "carol@example.com", json!({})).await;

    let response = batch_get(
        &mut client,
        request(
            &[&carol.id, ABSENT, &alice.id, &carol.id],
            &[
                "BOB@example.COM",
                " alice@example.com ",
                "nobody@example.com",
                "Bob@Example.com",
            ],
        ),
    )
    .await;
    assert_eq!(
        ids(&response),
        [&carol.id, &alice.id, &carol.id, &bob.id, &alice.id, &bob.id],
        "ids in request order, then emails in request order, duplicates twice"
    );
    assert_eq!(
        response.missing,
        [ABSENT, "nobody@example.com"],
        "missing keys as given, ids first"
    );
    assert_eq!(
        response.contacts[1], alice,
        "the contact as GetContact reads it"
    );
    assert_eq!(response.contacts[0], carol);

    let only_emails = batch_get(&mut client, request(&[], &["bob@example.com"])).await;
    assert_eq!(ids(&only_emails), [&bob.id]);
    assert!(only_emails.missing.is_empty());

    let empty = batch_get(&mut client, request(&[], &[])).await;
    assert!(
        empty.contacts.is_empty() && empty.missing.is_empty(),
        "{empty:?}"
    );

    let none = batch_get(&mut client, request(&[ABSENT], &["Nobody@Example.com"])).await;
    assert!(none.contacts.is_empty());
    assert_eq!(none.missing, [ABSENT, "Nobody@Example.com"]);
}

async fn invalid_keys_name_their_field_with_its_index(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let alice = create(&mut client, "alice@example.com", json!({})).await;
    let cases: Vec<(&str, pb::BatchGetContactsRequest, &str)> = vec![
        (
            "an id in the wrong format",
            request(&[&alice.id, ABSENT, &alice.id, "alice"], &[]),
            "ids[3]",
        ),
        ("an empty id", request(&[""], &[]), "ids[0]"),
        (
            "another kind of id",
            request(&["snd_01J00000000000000000000000"], &[]),
            "ids[0]",
        ),
        (
            "an invalid email",
            request(&[&alice.id], &["not-an-email"]),
            "emails[0]",
        ),
        (
            "a blank email after a good one",
            request(&[], &["alice@example.com", "  "]),
            "emails[1]",
        ),
        (
            "1,001 keys in all",
            pb::BatchGetContactsRequest {
                ids: vec![alice.id.clone(); 501],
                emails: vec!["alice@example.com".into(); 500],
            },
            "ids",
        ),
        (
            "1,001 emails",
            pb::BatchGetContactsRequest {
                ids: vec![],
                emails: vec!["alice@example.com".into(); 1001],
            },
            "ids",
        ),
    ];
    for (what, request, field) in cases {
        let status = assert_status(
            client.batch_get_contacts(request).await,
            Code::InvalidArgument,
            "VALIDATION_ERROR",
            what,
        );
        assert!(
            status.message().starts_with(&format!("`{field}`"))
                || status.message().contains(&format!("`{field}`")),
            "{what}: {}",
            status.message()
        );
        use tonic_types::StatusExt;
        let violations = status
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations;
        assert_eq!(violations[0].field, field, "{what}");
    }

    // Exactly 1,000 keys is allowed, duplicates included.
    let response = batch_get(
        &mut client,
        pb::BatchGetContactsRequest {
            ids: vec![alice.id.clone(); 500],
            emails: vec!["ALICE@example.com".into(); 500],
        },
    )
    .await;
    assert_eq!(response.contacts.len(), 1000);
    assert!(response.missing.is_empty());
}

async fn another_tenants_ids_and_emails_are_missing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut a = app.client();
    let theirs = create(&mut a, "shared@example.com", json!({"owner": "a"})).await;
    let mut b = app.other_tenant_client().await;
    let response = batch_get(&mut b, request(&[&theirs.id], &["shared@example.com"])).await;
    assert!(response.contacts.is_empty(), "{response:?}");
    assert_eq!(response.missing, [theirs.id.as_str(), "shared@example.com"]);

    // B's own contact with the same email is B's answer, never A's.
    let own = create(&mut b, "Shared@Example.com", json!({"owner": "b"})).await;
    let response = batch_get(&mut b, request(&[&theirs.id], &["shared@example.com"])).await;
    assert_eq!(ids(&response), [&own.id]);
    assert_eq!(response.missing, [theirs.id.as_str()]);
}

async fn a_revoked_key_is_unauthenticated_whatever_it_asks(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = unique_tenant();
    let (key_id, key) = kraiter_contacts::keys::create(app.store.as_ref(), &tenant)
        .await
        .expect("key");
    let mut client = app.client_with_key(Some(&key));
    let contact = create(&mut client, "kept@example.com", json!({})).await;
    let found = batch_get(&mut client, request(&[&contact.id], &[])).await;
    assert_eq!(ids(&found), [&contact.id], "a live key reads");
    assert!(app.store.revoke_api_key(&key_id).await.expect("revoke"));
    let cases = [
        (
            "its contact",
            request(&[&contact.id], &["kept@example.com"]),
        ),
        ("nothing", request(&[], &[])),
        ("an invalid key", request(&["nope"], &[])),
    ];
    for (what, request) in cases {
        assert_status(
            client.batch_get_contacts(request).await,
            Code::Unauthenticated,
            "UNAUTHORISED",
            what,
        );
    }
}

/// How many times a contact fits into one answer of at most 4 MiB.
fn times_it_fits(contact: &pb::Contact) -> usize {
    let len = contact.encoded_len();
    let framed = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
    (4 << 20) / framed
}

async fn an_answer_over_4_mib_is_refused_whole_and_one_under_it_decodes(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let big = create(
        &mut client,
        "big@example.com",
        json!({"blob": "x".repeat(60_000)}),
    )
    .await;
    let fits = times_it_fits(&big);
    assert!(
        fits < 1000,
        "{fits}: the contact is large enough for the test"
    );
    // A stock client (4 MiB decoding limit) reads the largest answer allowed.
    let response = batch_get(
        &mut client,
        pb::BatchGetContactsRequest {
            ids: vec![big.id.clone(); fits],
            emails: vec![],
        },
    )
    .await;
    assert_eq!(response.contacts.len(), fits);
    assert!(response.encoded_len() <= 4 << 20);

    let status = assert_status(
        client
            .batch_get_contacts(pb::BatchGetContactsRequest {
                ids: vec![big.id.clone(); fits],
                emails: vec!["big@example.com".into()],
            })
            .await,
        Code::ResourceExhausted,
        "MESSAGE_TOO_LARGE",
        "one more than fits",
    );
    assert!(status.message().contains("ask for fewer"), "{status:?}");
}

/// The store reads no more than its byte budget (and one row past it, to tell),
/// so a batch of large contacts holds a bounded number of bytes on the server.
async fn the_store_stops_reading_at_its_byte_budget(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = unique_tenant();
    let (_, key) = kraiter_contacts::keys::create(app.store.as_ref(), &tenant)
        .await
        .expect("key");
    let mut client = app.client_with_key(Some(&key));
    let mut ids = Vec::new();
    for i in 0..4 {
        let contact = create(
            &mut client,
            &format!("c{i}@example.com"),
            json!({"blob": "y".repeat(10_000)}),
        )
        .await;
        ids.push(contact.id);
    }
    let access = Access::tenant(tenant);
    let all = app
        .store
        .batch_get_contacts(&access, &ids, &[], 1 << 20)
        .await
        .expect("read");
    assert_eq!(all.items.len(), 4);
    assert!(!all.cut_short);
    let cut = app
        .store
        .batch_get_contacts(&access, &ids, &[], 15_000)
        .await
        .expect("read");
    assert_eq!(
        cut.items.len(),
        2,
        "stops at the first row past 15,000 bytes"
    );
    assert!(cut.cut_short);
}

conformance!(
    the_answer_follows_the_request_with_duplicates_and_missing_keys,
    invalid_keys_name_their_field_with_its_index,
    another_tenants_ids_and_emails_are_missing,
    a_revoked_key_is_unauthenticated_whatever_it_asks,
    an_answer_over_4_mib_is_refused_whole_and_one_under_it_decodes,
    the_store_stops_reading_at_its_byte_budget,
);
