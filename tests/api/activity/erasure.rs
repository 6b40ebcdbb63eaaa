//! DeleteContact erases the contact's activity, down to its remembered request ids:
//! checked through the API and, since a read of a deleted contact answers NOT_FOUND
//! whatever is left behind, in the database itself.

use kraiter_contacts::api::pb;
use pb::track_event_request::Subject;
use serde_json::json;
use tonic::Code;

use super::{assert_every_read_is_not_found, record, scheduled, send_to, sends, timeline_types};
use crate::conformance;
use crate::support::storage::Storage;
use crate::support::{Backend, assert_status, create, spawn_app};

/// What the person leaves in storage: `(what, query)`, each query counting rows of
/// contact `$1` (or, for remembered requests, of tenant `$1` and the contact `$2`).
const TRACES: &[(&str, &str)] = &[
    ("contact", "SELECT count(*) FROM contacts WHERE id = $1"),
    ("sends", "SELECT count(*) FROM sends WHERE contact_id = $1"),
    (
        "scheduled sends",
        "SELECT count(*) FROM scheduled_sends WHERE contact_id = $1",
    ),
    (
        "enrolments",
        "SELECT count(*) FROM sequence_enrolments WHERE contact_id = $1",
    ),
    (
        "memberships",
        "SELECT count(*) FROM segment_memberships WHERE contact_id = $1",
    ),
    (
        "events",
        "SELECT count(*) FROM timeline_entries WHERE contact_id = $1 AND type = 'event'",
    ),
    (
        "timeline entries",
        "SELECT count(*) FROM timeline_entries WHERE contact_id = $1",
    ),
];

/// Remembered requests of the contact: by the contact they name, and by the request
/// ids the test used (a row that lost its contact must go too).
const REQUESTS: &str = "SELECT count(*) FROM idempotency_keys \
     WHERE tenant_id = $1 AND (contact_id = $2 OR request_id LIKE 'erase-%')";

/// Every trace of `contact` in storage, by kind.
async fn traces(storage: &mut Storage, tenant: &str, contact: &str) -> Vec<(&'static str, i64)> {
    let mut found = Vec::new();
    for (what, sql) in TRACES {
        found.push((*what, storage.count(sql, &[contact]).await));
    }
    found.push((
        "remembered requests",
        storage.count(REQUESTS, &[tenant, contact]).await,
    ));
    found
}

async fn deleting_a_contact_erases_all_of_its_activity(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "gone@example.com", json!({})).await;
    let mut request = send_to(&contact.id, "t");
    request.request_id = "erase-send".into();
    record(&mut activity, request.clone()).await;
    activity
        .schedule_send(pb::ScheduleSendRequest {
            request_id: "erase-schedule".into(),
            contact_id: contact.id.clone(),
            template_id: "t".into(),
            scheduled_for: Some(prost_types::Timestamp {
                seconds: 2_000_000_000,
                nanos: 0,
            }),
            source: pb::SendSource::Campaign as i32,
            ..Default::default()
        })
        .await
        .expect("schedule");
    activity
        .enrol_contact(pb::EnrolContactRequest {
            request_id: "erase-enrol".into(),
            contact_id: contact.id.clone(),
            sequence_id: "s".into(),
            ..Default::default()
        })
        .await
        .expect("enrol");
    activity
        .set_segment_membership(pb::SetSegmentMembershipRequest {
            request_id: "erase-segment".into(),
            contact_id: contact.id.clone(),
            segment_id: "g".into(),
            member: true,
            ..Default::default()
        })
        .await
        .expect("segment");
    activity
        .track_event(pb::TrackEventRequest {
            request_id: "erase-event".into(),
            subject: Some(Subject::ContactId(contact.id.clone())),
            name: "page.viewed".into(),
            ..Default::default()
        })
        .await
        .expect("event");

    // Before: the queries see every kind of trace, so their zeros below mean erased.
    let mut storage = Storage::open(&app).await;
    let tenant = storage
        .text(
            "SELECT tenant_id FROM contacts WHERE id = $1",
            &[&contact.id],
        )
        .await
        .expect("the contact is stored");
    for (what, count) in traces(&mut storage, &tenant, &contact.id).await {
        assert!(count > 0, "{what}: none stored before the delete");
    }

    client
        .delete_contact(pb::DeleteContactRequest {
            id: contact.id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete");

    for (what, count) in traces(&mut storage, &tenant, &contact.id).await {
        assert_eq!(count, 0, "{what} of the deleted contact remain in storage");
    }
    assert_every_read_is_not_found(&mut client, &contact.id).await;

    // A new contact with the same address starts with nothing of the old one.
    let reborn = create(&mut client, "gone@example.com", json!({})).await;
    assert_eq!(sends(&mut client, &reborn.id, 10).await[0].sends.len(), 0);
    assert!(scheduled(&mut client, &reborn.id).await.is_empty());
    assert_eq!(
        timeline_types(&mut client, &reborn.id).await,
        vec!["contact.created"]
    );
    // Even the remembered request id is gone: retrying it acts on the deleted contact.
    let result = activity.record_send(request).await;
    assert_status(
        result,
        Code::NotFound,
        "NOT_FOUND",
        "request id of an erased contact",
    );
}

conformance!(deleting_a_contact_erases_all_of_its_activity,);
