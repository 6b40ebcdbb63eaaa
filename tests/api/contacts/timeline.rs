use kraiter_contacts::api::pb;
use serde_json::json;
use tonic::Code;

use crate::support::{Backend, assert_status, create, props, spawn_app, timeline};
use crate::{conformance, replicated};

async fn timeline_records_creation_and_each_change_with_before_and_after(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "t@example.com", json!({"plan": "pro"})).await;
    client
        .update_contact(pb::UpdateContactRequest {
            id: contact.id.clone(),
            email: Some("t2@example.com".into()),
            properties: Some(props(json!({"plan": "enterprise", "new": 1}))),
            ..Default::default()
        })
        .await
        .expect("update");
    let pages = timeline(
        &mut client,
        pb::ListContactTimelineRequest {
            id: contact.id.clone(),
            ..Default::default()
        },
    )
    .await;
    let entries: Vec<_> = pages.into_iter().flat_map(|p| p.entries).collect();
    let types: Vec<&str> = entries.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(
        types,
        vec!["contact.updated", "contact.created"],
        "newest first"
    );
    let data = |i: usize| {
        serde_json::Value::Object(
            kraiter_contacts::api::convert::from_struct(
                entries[i].data.clone().expect("data"),
                "data",
            )
            .expect("json"),
        )
    };
    assert_eq!(
        data(1),
        json!({"email": "t@example.com", "properties": {"plan": "pro"}})
    );
    assert_eq!(
        data(0),
        json!({
            "email": {"before": "t@example.com", "after": "t2@example.com"},
            "properties": {"plan": {"before": "pro", "after": "enterprise"}, "new": {"before": null, "after": 1}}
        })
    );
}

async fn timeline_pages_in_both_orders_and_filters_by_type(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "pages@example.com", json!({})).await;
    for i in 0..24 {
        client
            .update_contact(pb::UpdateContactRequest {
                id: contact.id.clone(),
                email: None,
                properties: Some(props(json!({"i": i}))),
                ..Default::default()
            })
            .await
            .expect("update");
    }
    let newest = timeline(
        &mut client,
        pb::ListContactTimelineRequest {
            id: contact.id.clone(),
            limit: 5,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(newest.len(), 5, "25 entries in pages of 5");
    let newest: Vec<_> = newest.into_iter().flat_map(|p| p.entries).collect();
    assert_eq!(newest.len(), 25);
    let oldest = timeline(
        &mut client,
        pb::ListContactTimelineRequest {
            id: contact.id.clone(),
            limit: 7,
            order: pb::TimelineOrder::OldestFirst as i32,
            ..Default::default()
        },
    )
    .await;
    let oldest: Vec<_> = oldest.into_iter().flat_map(|p| p.entries).collect();
    let mut reversed = newest.clone();
    reversed.reverse();
    assert_eq!(oldest, reversed, "oldest-first is newest-first reversed");
    assert_eq!(oldest[0].r#type, "contact.created");

    let created_only = timeline(
        &mut client,
        pb::ListContactTimelineRequest {
            id: contact.id.clone(),
            types: vec!["contact.created".into()],
            ..Default::default()
        },
    )
    .await;
    let created_only: Vec<_> = created_only.into_iter().flat_map(|p| p.entries).collect();
    assert_eq!(created_only.len(), 1);

    let first = timeline(
        &mut client,
        pb::ListContactTimelineRequest {
            id: contact.id.clone(),
            limit: 10,
            max_pages: 1,
            ..Default::default()
        },
    )
    .await;
    let rest = timeline(
        &mut client,
        pb::ListContactTimelineRequest {
            id: contact.id.clone(),
            limit: 10,
            cursor: first[0].next_cursor.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut resumed: Vec<_> = first.into_iter().flat_map(|p| p.entries).collect();
    resumed.extend(rest.into_iter().flat_map(|p| p.entries));
    assert_eq!(resumed, newest, "resume by cursor");
}

async fn timeline_of_unknown_contact_is_not_found_and_bad_types_invalid(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let result = client
        .list_contact_timeline(pb::ListContactTimelineRequest {
            id: "con_01JD0000000000000000000000".into(),
            ..Default::default()
        })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "unknown contact");
    let contact = create(&mut client, "x@example.com", json!({})).await;
    let result = client
        .list_contact_timeline(pb::ListContactTimelineRequest {
            id: contact.id.clone(),
            types: vec!["bad type!".into()],
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "bad type",
    );
    let result = client
        .list_contact_timeline(pb::ListContactTimelineRequest {
            id: contact.id,
            order: 99,
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "unknown order",
    );
}

/// A timeline of large entries is read in queries that stop at their byte budget
/// (4 MiB: 100 events of 60 KB are ~6 MB) and pages that stop at theirs: with `limit`
/// 1000, every entry still arrives once, in order, each page within the default
/// 4 MiB a client accepts.
async fn a_timeline_of_large_entries_streams_every_entry_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "big@example.com", json!({})).await;
    let blob = "x".repeat(60_000);
    for i in 0..100 {
        activity
            .track_event(pb::TrackEventRequest {
                subject: Some(pb::track_event_request::Subject::ContactId(
                    contact.id.clone(),
                )),
                name: format!("big.{i:03}"),
                properties: Some(props(json!({ "blob": blob, "i": i }))),
                ..Default::default()
            })
            .await
            .expect("track a large event");
    }
    let pages = timeline(
        &mut client,
        pb::ListContactTimelineRequest {
            id: contact.id.clone(),
            limit: 1000,
            order: pb::TimelineOrder::OldestFirst as i32,
            ..Default::default()
        },
    )
    .await;
    assert!(pages.len() > 1, "large entries take several pages");
    let names: Vec<String> = pages
        .iter()
        .flat_map(|page| page.entries.iter())
        .filter(|entry| entry.r#type == "event")
        .map(|entry| {
            let data = entry.data.as_ref().expect("data");
            match data.fields.get("name").and_then(|v| v.kind.clone()) {
                Some(prost_types::value::Kind::StringValue(name)) => name,
                other => panic!("an event's name: {other:?}"),
            }
        })
        .collect();
    let expected: Vec<String> = (0..100).map(|i| format!("big.{i:03}")).collect();
    assert_eq!(names, expected, "every event once, oldest first");
}

conformance!(
    a_timeline_of_large_entries_streams_every_entry_once,
    timeline_records_creation_and_each_change_with_before_and_after,
    timeline_pages_in_both_orders_and_filters_by_type,
    timeline_of_unknown_contact_is_not_found_and_bad_types_invalid,
);
// Not the unknown-contact test: it reads nothing a replica would serve.
replicated!(
    a_timeline_of_large_entries_streams_every_entry_once,
    timeline_records_creation_and_each_change_with_before_and_after,
    timeline_pages_in_both_orders_and_filters_by_type,
);
