//! ScheduleSend and CancelScheduledSend: pending sends, earliest first, until a send
//! fulfils them or they are cancelled.

use kraiter_contacts::api::pb;
use serde_json::json;
use tonic::Code;

use super::{record, scheduled, send_to, timeline_types};
use crate::conformance;
use crate::support::{Backend, assert_status, create, spawn_app};

async fn scheduled_sends_list_pending_earliest_first_and_cancel_or_fulfil(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "sched@example.com", json!({})).await;
    let base = 2_000_000_000;
    let mut made = Vec::new();
    for (i, offset) in [300, 100, 200, 400, 50].into_iter().enumerate() {
        let s = activity
            .schedule_send(pb::ScheduleSendRequest {
                contact_id: contact.id.clone(),
                template_id: format!("t{i}"),
                scheduled_for: Some(prost_types::Timestamp {
                    seconds: base + offset,
                    nanos: 0,
                }),
                source: pb::SendSource::Sequence as i32,
                source_id: "seq_1".into(),
                step: i as i32,
                ..Default::default()
            })
            .await
            .expect("schedule")
            .into_inner();
        assert_eq!(s.status, pb::ScheduledSendStatus::Pending as i32);
        made.push(s);
    }
    let order: Vec<i64> = scheduled(&mut client, &contact.id)
        .await
        .iter()
        .map(|s| s.scheduled_for.as_ref().expect("time").seconds - base)
        .collect();
    assert_eq!(order, vec![50, 100, 200, 300, 400]);

    let cancelled = activity
        .cancel_scheduled_send(pb::CancelScheduledSendRequest {
            scheduled_send_id: made[1].id.clone(),
            ..Default::default()
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.status, pb::ScheduledSendStatus::Cancelled as i32);
    let mut fulfil = send_to(&contact.id, "t2");
    fulfil.scheduled_send_id = made[2].id.clone();
    record(&mut activity, fulfil.clone()).await;
    let order: Vec<i64> = scheduled(&mut client, &contact.id)
        .await
        .iter()
        .map(|s| s.scheduled_for.as_ref().expect("time").seconds - base)
        .collect();
    assert_eq!(
        order,
        vec![50, 300, 400],
        "cancelled and sent ones are gone"
    );

    let result = activity.record_send(fulfil).await;
    assert_status(
        result,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "fulfil twice",
    );
    let result = activity
        .cancel_scheduled_send(pb::CancelScheduledSendRequest {
            scheduled_send_id: made[1].id.clone(),
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "cancel twice",
    );
    let other = create(&mut client, "other@example.com", json!({})).await;
    let mut wrong = send_to(&other.id, "t");
    wrong.scheduled_send_id = made[0].id.clone();
    let result = activity.record_send(wrong).await;
    assert_status(
        result,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "another contact's scheduled send",
    );
    let types = timeline_types(&mut client, &contact.id).await;
    assert_eq!(types.iter().filter(|t| *t == "send.scheduled").count(), 5);
    assert_eq!(types.iter().filter(|t| *t == "send.cancelled").count(), 1);
}

conformance!(scheduled_sends_list_pending_earliest_first_and_cancel_or_fulfil,);
