//! Orders of ListContacts (issue 16): every order with ties in its sort key, pages
//! resumed by keyset, exactly once for contacts that exist for the whole stream while
//! others are created and deleted, and cursors bound to the filter and order.

use std::collections::{BTreeMap, BTreeSet};

use kraiter_contacts::api::pb::{self, ContactOrder, FilterOperator as Op};
use serde_json::json;
use tonic::Code;

use super::filter_calls::{any, cond, list, try_list};
use crate::conformance;
use crate::support::storage::Storage;
use crate::support::{Backend, Client, assert_status, create, spawn_app};

const ORDERS: [ContactOrder; 7] = [
    ContactOrder::Unspecified,
    ContactOrder::CreatedAtAsc,
    ContactOrder::CreatedAtDesc,
    ContactOrder::UpdatedAtAsc,
    ContactOrder::UpdatedAtDesc,
    ContactOrder::EmailAsc,
    ContactOrder::EmailDesc,
];

fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    let ts = ts.as_ref().expect("times are set");
    ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000)
}

/// The sort key of `contact` in `order`, and whether the order descends.
fn sort_key(order: ContactOrder, contact: &pb::Contact) -> (String, bool) {
    let time = |t: i64| format!("{:020}", t + 100_000_000_000_000_000);
    match order {
        ContactOrder::Unspecified => (String::new(), false),
        ContactOrder::CreatedAtAsc => (time(micros(&contact.created_at)), false),
        ContactOrder::CreatedAtDesc => (time(micros(&contact.created_at)), true),
        ContactOrder::UpdatedAtAsc => (time(micros(&contact.updated_at)), false),
        ContactOrder::UpdatedAtDesc => (time(micros(&contact.updated_at)), true),
        ContactOrder::EmailAsc => (contact.email.to_lowercase(), false),
        ContactOrder::EmailDesc => (contact.email.to_lowercase(), true),
    }
}

fn assert_sorted(order: ContactOrder, contacts: &[pb::Contact], what: &str) {
    for pair in contacts.windows(2) {
        let (a, desc) = sort_key(order, &pair[0]);
        let (b, _) = sort_key(order, &pair[1]);
        let (a, b) = ((a, pair[0].id.clone()), (b, pair[1].id.clone()));
        let in_order = if desc { a > b } else { a < b };
        assert!(in_order, "{what}: {order:?} puts {a:?} before {b:?}");
    }
}

/// Gives the contacts of each group of `size` the times of the group's first, so
/// every time order has ties that only the id breaks.
async fn tie(storage: &mut Storage, contacts: &[pb::Contact], size: usize) {
    for group in contacts.chunks(size) {
        for contact in &group[1..] {
            storage
                .count(
                    "UPDATE contacts SET \
                     created_at = (SELECT created_at FROM contacts WHERE id = $1), \
                     updated_at = (SELECT updated_at FROM contacts WHERE id = $1) \
                     WHERE id = $2 RETURNING revision",
                    &[&group[0].id, &contact.id],
                )
                .await;
        }
    }
}

async fn every_order_breaks_ties_by_id_and_delivers_each_contact_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut created = Vec::new();
    for i in 0..23 {
        // Mixed case and an order unlike creation order.
        let email = format!("{}{i:02}@example.com", ["Zed", "amy", "Bo"][i % 3]);
        created.push(create(&mut client, &email, json!({"i": i})).await);
    }
    tie(&mut Storage::open(&app).await, &created, 4).await;
    let ids: BTreeSet<String> = created.iter().map(|c| c.id.clone()).collect();
    for order in ORDERS {
        for limit in [1, 3, 1000] {
            let listed = list(&mut client, None, order, limit).await;
            let what = format!("{order:?} in pages of {limit}");
            assert_eq!(listed.len(), ids.len(), "{what}: each once");
            let listed_ids: BTreeSet<String> = listed.iter().map(|c| c.id.clone()).collect();
            assert_eq!(listed_ids, ids, "{what}: all of them");
            assert_sorted(order, &listed, &what);
        }
    }
}

/// Streams page by page; after each page deletes two contacts of `churn` and creates
/// two more, so the stream runs under concurrent inserts and deletes.
async fn stream_with_churn(
    client: &mut Client,
    writer: &mut Client,
    request: pb::ListContactsRequest,
    churn: &mut Vec<String>,
) -> Vec<pb::Contact> {
    let mut stream = client
        .list_contacts(request)
        .await
        .expect("list starts")
        .into_inner();
    let mut seen = Vec::new();
    let mut round = 0;
    while let Some(page) = stream.message().await.expect("page") {
        seen.extend(page.contacts);
        for _ in 0..2 {
            if let Some(id) = churn.pop() {
                writer
                    .delete_contact(pb::DeleteContactRequest {
                        id,
                        ..Default::default()
                    })
                    .await
                    .expect("delete");
            }
            round += 1;
            let email = format!("new{round:03}-{}@example.com", ulid::Ulid::new()).to_lowercase();
            let made = create(writer, &email, json!({"kind": "churn"})).await;
            churn.insert(0, made.id);
        }
    }
    seen
}

async fn contacts_that_exist_throughout_are_streamed_once_under_inserts_and_deletes(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let (mut client, mut writer) = (app.client(), app.client());
    let mut keep = BTreeSet::new();
    let mut churn = Vec::new();
    for i in 0..40 {
        let kind = if i % 2 == 0 { "keep" } else { "churn" };
        let email = format!("{kind}{i:02}@example.com");
        let made = create(&mut client, &email, json!({"kind": kind})).await;
        if kind == "keep" {
            keep.insert(made.id);
        } else {
            churn.push(made.id);
        }
    }
    let filter = any(vec![
        cond("properties.kind", Op::Equals, json!("keep")),
        cond("properties.kind", Op::Equals, json!("churn")),
    ]);
    for order in ORDERS {
        let request = pb::ListContactsRequest {
            limit: 4,
            order_by: order as i32,
            filter: Some(filter.clone()),
            ..Default::default()
        };
        let seen = stream_with_churn(&mut client, &mut writer, request, &mut churn).await;
        let mut times: BTreeMap<String, usize> = BTreeMap::new();
        for contact in &seen {
            *times.entry(contact.id.clone()).or_default() += 1;
        }
        assert!(times.values().all(|n| *n == 1), "{order:?}: none twice");
        let missed: Vec<_> = keep.iter().filter(|id| !times.contains_key(*id)).collect();
        assert!(
            missed.is_empty(),
            "{order:?}: contacts that stayed were skipped: {missed:?}"
        );
        assert_sorted(order, &seen, &format!("{order:?} under churn"));
    }
}

async fn a_cursor_resumes_only_its_own_filter_and_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    for i in 0..6 {
        create(
            &mut client,
            &format!("c{i}@example.com"),
            json!({"plan": "pro"}),
        )
        .await;
    }
    let pro = cond("properties.plan", Op::Equals, json!("pro"));
    let first = |filter: Option<pb::ContactFilter>, order: ContactOrder| pb::ListContactsRequest {
        limit: 2,
        max_pages: 1,
        filter,
        order_by: order as i32,
        ..Default::default()
    };
    let mut cursor_of = async |request: pb::ListContactsRequest| {
        let mut stream = client
            .list_contacts(request)
            .await
            .expect("list")
            .into_inner();
        let page = stream.message().await.expect("page").expect("a first page");
        page.next_cursor
    };
    let filtered = cursor_of(first(Some(pro.clone()), ContactOrder::EmailDesc)).await;
    let plain = cursor_of(first(None, ContactOrder::Unspecified)).await;
    let other = cond("properties.plan", Op::Equals, json!("free"));
    let cases = [
        (
            "another filter",
            filtered.clone(),
            Some(other),
            ContactOrder::EmailDesc,
        ),
        ("no filter", filtered.clone(), None, ContactOrder::EmailDesc),
        (
            "another order",
            filtered.clone(),
            Some(pro.clone()),
            ContactOrder::EmailAsc,
        ),
        (
            "the default order",
            filtered.clone(),
            Some(pro.clone()),
            ContactOrder::Unspecified,
        ),
        (
            "a plain cursor with a filter",
            plain.clone(),
            Some(pro.clone()),
            ContactOrder::Unspecified,
        ),
        (
            "a plain cursor with an order",
            plain,
            None,
            ContactOrder::CreatedAtAsc,
        ),
    ];
    for (what, cursor, filter, order) in cases {
        let request = pb::ListContactsRequest {
            cursor,
            ..first(filter, order)
        };
        let status = assert_status(
            try_list(&mut client, request).await,
            Code::InvalidArgument,
            "VALIDATION_ERROR",
            what,
        );
        assert!(status.message().contains("cursor"), "{what}: {status:?}");
    }
    let resumed = pb::ListContactsRequest {
        cursor: filtered,
        ..first(Some(pro), ContactOrder::EmailDesc)
    };
    let rest = try_list(&mut client, resumed)
        .await
        .expect("its own query resumes");
    assert_eq!(rest.len(), 2, "the second page of three");
}

conformance!(
    every_order_breaks_ties_by_id_and_delivers_each_contact_once,
    contacts_that_exist_throughout_are_streamed_once_under_inserts_and_deletes,
    a_cursor_resumes_only_its_own_filter_and_order;
    replicated
);
