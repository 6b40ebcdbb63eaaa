//! DeleteContact erases the contact's activity, down to its remembered request ids.

use kraiter_contacts::api::pb;
use serde_json::json;
use tonic::Code;

use super::{assert_every_read_is_not_found, record, scheduled, send_to, sends, timeline_types};
use crate::conformance;
use crate::support::{Backend, assert_status, create, spawn_app};

async fn deleting_a_contact_erases_all_of_its_activity(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "gone@example.com", json!({})).await;
    let mut request = send_to(&contact.id, "t");
    request.request_id = "erase-1".into();
    record(&mut activity, request.clone()).await;
    activity
        .schedule_send(pb::ScheduleSendRequest {
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
            contact_id: contact.id.clone(),
            sequence_id: "s".into(),
            ..Default::default()
        })
        .await
        .expect("enrol");
    activity
        .set_segment_membership(pb::SetSegmentMembershipRequest {
            contact_id: contact.id.clone(),
            segment_id: "g".into(),
            member: true,
            ..Default::default()
        })
        .await
        .expect("segment");
    client
        .delete_contact(pb::DeleteContactRequest {
            id: contact.id.clone(),
        })
        .await
        .expect("delete");

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
