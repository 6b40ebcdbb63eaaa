//! TrackEvent: events on the timeline, contacts created by an event, unsubscribes.

use std::collections::BTreeMap;

use kraiter_contacts::api::pb;
use pb::track_event_request::Subject;
use serde_json::json;

use super::timeline_types;
use crate::conformance;
use crate::support::{Backend, props, spawn_app};

async fn tracked_events_create_contacts_and_unsubscribe(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let tracked = activity
        .track_event(pb::TrackEventRequest {
            subject: Some(Subject::Email("ev@example.com".into())),
            name: "page.viewed".into(),
            properties: Some(props(json!({"path": "/pricing"}))),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("track")
        .into_inner();
    let entry = tracked.entry.expect("entry");
    assert_eq!(entry.r#type, "event");
    assert_eq!(
        entry.timestamp.as_ref().map(|t| t.seconds),
        Some(1_700_000_000)
    );
    let data = kraiter_contacts::api::convert::from_struct(entry.data.expect("data"), "data")
        .expect("json");
    assert_eq!(data["name"], json!("page.viewed"));
    assert_eq!(data["properties"], json!({"path": "/pricing"}));
    assert!(
        data["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("evt_"))
    );
    activity
        .track_event(pb::TrackEventRequest {
            subject: Some(Subject::ContactId(tracked.contact_id.clone())),
            name: "email.unsubscribed".into(),
            ..Default::default()
        })
        .await
        .expect("unsubscribe");
    let contact = client
        .get_contact(pb::GetContactRequest {
            id: tracked.contact_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert!(contact.unsubscribed);
    assert!(!contact.suppressed);
    let types = timeline_types(&mut client, &contact.id).await;
    assert_eq!(
        &types[..2],
        ["contact.created", "event"],
        "the contact dates from the backdated event that created it, and comes first"
    );
    let mut counts = BTreeMap::new();
    for t in &types {
        *counts.entry(t.as_str()).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([
            ("contact.created", 1),
            ("contact.unsubscribed", 1),
            ("event", 2)
        ])
    );
}

conformance!(tracked_events_create_contacts_and_unsubscribe,);
