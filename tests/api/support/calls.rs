//! Calls most tests make, and what they check after them: create a contact, read a
//! whole list or timeline, properties as JSON, and whether an interrupted update
//! landed whole.

use kraiter_contacts::api::convert::{from_struct, to_struct};
use kraiter_contacts::api::pb;
use serde_json::Value;

use super::Client;

pub fn props(value: Value) -> prost_types::Struct {
    to_struct(
        value
            .as_object()
            .cloned()
            .expect("properties are an object"),
    )
}

pub fn json_of(contact: &pb::Contact) -> Value {
    let properties = contact.properties.clone().unwrap_or_default();
    Value::Object(from_struct(properties, "properties").expect("stored properties convert"))
}

pub async fn create(client: &mut Client, email: &str, properties: Value) -> pb::Contact {
    client
        .create_contact(pb::CreateContactRequest {
            email: email.to_owned(),
            properties: Some(props(properties)),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("create {email}: {status:?}"))
        .into_inner()
}

/// Reads a whole ListContacts stream: the pages, in order.
pub async fn pages(
    client: &mut Client,
    request: pb::ListContactsRequest,
) -> Vec<pb::ListContactsResponse> {
    let mut stream = client
        .list_contacts(request)
        .await
        .expect("list starts")
        .into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.message().await.expect("page arrives") {
        pages.push(page);
    }
    pages
}

/// Reads a whole ListContactTimeline stream: the pages, in order.
pub async fn timeline(
    client: &mut Client,
    request: pb::ListContactTimelineRequest,
) -> Vec<pb::ListContactTimelineResponse> {
    let mut stream = client
        .list_contact_timeline(request)
        .await
        .expect("timeline starts")
        .into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.message().await.expect("page") {
        pages.push(page);
    }
    pages
}

/// After a call that was cancelled or timed out while its write waited in the
/// database: a statement that already reached PostgreSQL runs to its end (the driver
/// sends no cancel request), so the write may have landed; either way it landed whole,
/// the value and its timeline entry together, or neither.
pub async fn assert_landed_whole_or_not_at_all(
    client: &mut Client,
    id: &str,
    before: serde_json::Value,
    after: serde_json::Value,
) {
    let fetched = client
        .get_contact(pb::GetContactRequest { id: id.to_owned() })
        .await
        .expect("get")
        .into_inner();
    let value = json_of(&fetched);
    let updates = timeline(
        client,
        pb::ListContactTimelineRequest {
            id: id.to_owned(),
            types: vec!["contact.updated".into()],
            ..Default::default()
        },
    )
    .await
    .iter()
    .map(|page| page.entries.len())
    .sum::<usize>();
    match updates {
        0 => assert_eq!(value, before, "not applied, and no entry"),
        1 => assert_eq!(value, after, "applied with its entry"),
        n => panic!("{n} update entries for one cancelled update"),
    }
}

/// Contact `id` as read back, and its whole timeline, oldest first: what a write
/// that must change nothing has to leave as it was.
pub async fn contact_and_timeline(
    client: &mut Client,
    id: &str,
) -> (pb::Contact, Vec<pb::TimelineEntry>) {
    let contact = client
        .get_contact(pb::GetContactRequest { id: id.to_owned() })
        .await
        .expect("get the contact")
        .into_inner();
    let request = pb::ListContactTimelineRequest {
        id: id.to_owned(),
        limit: 1000,
        order: pb::TimelineOrder::OldestFirst as i32,
        ..Default::default()
    };
    let entries = timeline(client, request)
        .await
        .into_iter()
        .flat_map(|page| page.entries)
        .collect();
    (contact, entries)
}
