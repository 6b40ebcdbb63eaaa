//! `request_id`: a retried ingestion request returns its first result and writes once.

use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use pb::track_event_request::Subject;
use serde_json::json;
use tonic::Code;

use super::{record, send_to, sends, set_status, timeline_types};
use crate::conformance;
use crate::support::{Backend, assert_status, create, spawn_app};

async fn a_retried_request_id_returns_the_first_result_and_writes_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "idem@example.com", json!({})).await;
    let mut request = send_to(&contact.id, "t");
    request.request_id = "req-1".into();
    let first = record(&mut activity, request.clone()).await;
    let second = record(&mut activity, request.clone()).await;
    assert_eq!(first, second, "the retry returns the first result");

    // Concurrent retries of a new id: one write, one answer.
    request.request_id = "req-2".into();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut activity = app.activity();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            activity
                .record_send(request)
                .await
                .map(tonic::Response::into_inner)
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        ids.insert(task.await.expect("task").expect("retry succeeds").id);
    }
    assert_eq!(ids.len(), 1, "all concurrent retries got the same send");
    let listed: usize = sends(&mut client, &contact.id, 100)
        .await
        .iter()
        .map(|p| p.sends.len())
        .sum();
    assert_eq!(listed, 2, "two request ids, two sends");
    let types = timeline_types(&mut client, &contact.id).await;
    assert_eq!(types.iter().filter(|t| *t == "email.queued").count(), 2);

    // The same id for a different request is refused.
    let mut different = request.clone();
    different.template_id = "other".into();
    let result = activity.record_send(different).await;
    assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "reused request id",
    );

    // Idempotent status changes: the retry of an accepted change does not fail.
    let change = pb::UpdateSendStatusRequest {
        request_id: "req-3".into(),
        send_id: first.id.clone(),
        status: pb::SendStatus::Sent as i32,
        ..Default::default()
    };
    let a = activity
        .update_send_status(change.clone())
        .await
        .expect("first")
        .into_inner();
    let b = activity
        .update_send_status(change)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(a, b);
    let types = timeline_types(&mut client, &contact.id).await;
    assert_eq!(types.iter().filter(|t| *t == "email.sent").count(), 1);
}

async fn every_ingestion_rpc_is_idempotent(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "retry@example.com", json!({})).await;
    let send = record(&mut activity, send_to(&contact.id, "base")).await;
    set_status(&mut activity, &send.id, pb::SendStatus::Sent)
        .await
        .expect("sent");
    let later = Some(prost_types::Timestamp {
        seconds: 2_000_000_000,
        nanos: 0,
    });
    let scheduled = activity
        .schedule_send(pb::ScheduleSendRequest {
            contact_id: contact.id.clone(),
            template_id: "s".into(),
            scheduled_for: later,
            source: 1,
            ..Default::default()
        })
        .await
        .expect("schedule")
        .into_inner();
    activity
        .enrol_contact(pb::EnrolContactRequest {
            contact_id: contact.id.clone(),
            sequence_id: "base".into(),
            ..Default::default()
        })
        .await
        .expect("enrol");

    // Each call runs twice with the same request id: the second returns the same
    // answer (even where a plain repeat would fail a rule) and writes nothing.
    macro_rules! twice {
        ($method:ident, $request:expr) => {{
            let request = $request;
            let first = activity
                .$method(request.clone())
                .await
                .expect(stringify!($method))
                .into_inner();
            let before = timeline_types(&mut client, &contact.id).await.len();
            let second = activity
                .$method(request)
                .await
                .expect(concat!(stringify!($method), " retry"))
                .into_inner();
            assert_eq!(
                first,
                second,
                "{} retry returns the first result",
                stringify!($method)
            );
            let after = timeline_types(&mut client, &contact.id).await.len();
            assert_eq!(before, after, "{} retry wrote nothing", stringify!($method));
        }};
    }
    twice!(
        record_send,
        pb::RecordSendRequest {
            request_id: "i1".into(),
            ..send_to(&contact.id, "t")
        }
    );
    twice!(
        update_send_status,
        pb::UpdateSendStatusRequest {
            request_id: "i2".into(),
            send_id: send.id.clone(),
            status: pb::SendStatus::Delivered as i32,
            ..Default::default()
        }
    );
    twice!(
        record_send_engagement,
        pb::RecordSendEngagementRequest {
            request_id: "i3".into(),
            send_id: send.id.clone(),
            engagement: pb::Engagement::Clicked as i32,
            ..Default::default()
        }
    );
    twice!(
        schedule_send,
        pb::ScheduleSendRequest {
            request_id: "i4".into(),
            contact_id: contact.id.clone(),
            template_id: "s2".into(),
            scheduled_for: later,
            source: 1,
            ..Default::default()
        }
    );
    twice!(
        cancel_scheduled_send,
        pb::CancelScheduledSendRequest {
            request_id: "i5".into(),
            scheduled_send_id: scheduled.id.clone()
        }
    );
    twice!(
        enrol_contact,
        pb::EnrolContactRequest {
            request_id: "i6".into(),
            contact_id: contact.id.clone(),
            sequence_id: "seq".into(),
            ..Default::default()
        }
    );
    twice!(
        update_enrolment,
        pb::UpdateEnrolmentRequest {
            request_id: "i7".into(),
            contact_id: contact.id.clone(),
            sequence_id: "base".into(),
            status: pb::EnrolmentStatus::Exited as i32,
            ..Default::default()
        }
    );
    twice!(
        set_segment_membership,
        pb::SetSegmentMembershipRequest {
            request_id: "i8".into(),
            contact_id: contact.id.clone(),
            segment_id: "g".into(),
            member: true,
            ..Default::default()
        }
    );
    twice!(
        track_event,
        pb::TrackEventRequest {
            request_id: "i9".into(),
            subject: Some(Subject::ContactId(contact.id.clone())),
            name: "x".into(),
            ..Default::default()
        }
    );

    // Request ids are per tenant: another tenant may use the same one.
    let key = app.other_tenant_key().await;
    let mut other = app.activity_with_key(&key);
    let mut theirs = pb::RecordSendRequest {
        request_id: "i1".into(),
        ..send_to("", "t")
    };
    theirs.recipient = Some(Recipient::Email("someone@example.com".into()));
    let result = other
        .record_send(theirs)
        .await
        .expect("same id in another tenant")
        .into_inner();
    assert_ne!(result.contact_id, contact.id);
}

conformance!(
    a_retried_request_id_returns_the_first_result_and_writes_once,
    every_ingestion_rpc_is_idempotent,
);
