//! What ingestion refuses: another tenant's records, invalid requests, unknown contacts.

use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use pb::track_event_request::Subject;
use serde_json::json;
use tonic::Code;

use super::{assert_every_read_is_not_found, record, send_to, sends, set_status, timeline_types};
use crate::conformance;
use crate::support::{Backend, assert_status, create, spawn_app};

async fn activity_of_another_tenant_is_out_of_reach(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "mine@example.com", json!({})).await;
    let send = record(&mut activity, send_to(&contact.id, "t")).await;
    let key = app.other_tenant_key().await;
    let mut other = app.activity_with_key(&key);
    let mut other_reads = app.client_with_key(Some(&key));
    assert_status(
        other.record_send(send_to(&contact.id, "x")).await,
        Code::NotFound,
        "NOT_FOUND",
        "send to a foreign contact",
    );
    assert_status(
        set_status(&mut other, &send.id, pb::SendStatus::Sent).await,
        Code::NotFound,
        "NOT_FOUND",
        "foreign send",
    );
    assert_status(
        other
            .enrol_contact(pb::EnrolContactRequest {
                contact_id: contact.id.clone(),
                sequence_id: "s".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "NOT_FOUND",
        "enrol a foreign contact",
    );
    assert_status(
        other
            .track_event(pb::TrackEventRequest {
                subject: Some(Subject::ContactId(contact.id.clone())),
                name: "x".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "NOT_FOUND",
        "event for a foreign contact",
    );
    assert_status(
        other_reads
            .list_contact_sends(pb::ListContactSendsRequest {
                id: contact.id.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "NOT_FOUND",
        "foreign sends",
    );
    // An email known to tenant A is a new contact for tenant B.
    let mut by_email = send_to("", "t");
    by_email.recipient = Some(Recipient::Email("mine@example.com".into()));
    let theirs = record(&mut other, by_email).await;
    assert_ne!(theirs.contact_id, contact.id);
    let mine: usize = sends(&mut client, &contact.id, 100)
        .await
        .iter()
        .map(|p| p.sends.len())
        .sum();
    assert_eq!(mine, 1, "tenant A's contact got nothing from tenant B");
}

async fn invalid_ingestion_requests_are_invalid_argument(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "v@example.com", json!({})).await;
    let cases: Vec<(&str, pb::RecordSendRequest)> = vec![
        (
            "no recipient",
            pb::RecordSendRequest {
                recipient: None,
                ..send_to(&contact.id, "t")
            },
        ),
        ("no template", send_to(&contact.id, "")),
        (
            "no source",
            pb::RecordSendRequest {
                source: 0,
                ..send_to(&contact.id, "t")
            },
        ),
        (
            "unknown source",
            pb::RecordSendRequest {
                source: 42,
                ..send_to(&contact.id, "t")
            },
        ),
        (
            "bad initial status",
            pb::RecordSendRequest {
                status: pb::SendStatus::Bounced as i32,
                ..send_to(&contact.id, "t")
            },
        ),
        ("bad contact id", send_to("con_nope", "t")),
        (
            "bad email",
            pb::RecordSendRequest {
                recipient: Some(Recipient::Email("nope".into())),
                ..send_to(&contact.id, "t")
            },
        ),
        (
            "NUL in subject",
            pb::RecordSendRequest {
                subject: "a\0b".into(),
                ..send_to(&contact.id, "t")
            },
        ),
        (
            "bad scheduled id",
            pb::RecordSendRequest {
                scheduled_send_id: "x".into(),
                ..send_to(&contact.id, "t")
            },
        ),
        (
            "bad time",
            pb::RecordSendRequest {
                occurred_at: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..send_to(&contact.id, "t")
            },
        ),
        (
            "huge request id",
            pb::RecordSendRequest {
                request_id: "r".repeat(500),
                ..send_to(&contact.id, "t")
            },
        ),
    ];
    for (why, request) in cases {
        assert_status(
            activity.record_send(request).await,
            Code::InvalidArgument,
            "VALIDATION_ERROR",
            why,
        );
    }
    assert_status(
        activity
            .schedule_send(pb::ScheduleSendRequest {
                contact_id: contact.id.clone(),
                template_id: "t".into(),
                source: 1,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "schedule without a time",
    );
    assert_status(
        activity
            .track_event(pb::TrackEventRequest {
                subject: Some(Subject::ContactId(contact.id.clone())),
                name: String::new(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "event without a name",
    );
    assert_eq!(
        timeline_types(&mut client, &contact.id).await,
        vec!["contact.created"],
        "nothing was written"
    );
}

async fn reads_of_an_unknown_contact_are_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    assert_every_read_is_not_found(&mut client, "con_01JD0000000000000000000000").await;
}

conformance!(
    activity_of_another_tenant_is_out_of_reach,
    invalid_ingestion_requests_are_invalid_argument,
    reads_of_an_unknown_contact_are_not_found,
);
