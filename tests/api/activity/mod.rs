//! ActivityService: each ingestion RPC, its lifecycle rules and idempotency, and the
//! ContactsService reads it feeds. One file per RPC group; the calls they share are here.

mod enrolments;
mod erasure;
mod events;
mod idempotency;
mod refusals;
mod scheduled;
mod segments;
mod sends;

use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use tonic::Code;

use crate::support::{Activity, Client, assert_status, timeline};

fn send_to(contact_id: &str, template: &str) -> pb::RecordSendRequest {
    pb::RecordSendRequest {
        recipient: Some(Recipient::ContactId(contact_id.to_owned())),
        template_id: template.to_owned(),
        template_name: format!("{template} name"),
        subject: "Hello".into(),
        source: pb::SendSource::Transactional as i32,
        ..Default::default()
    }
}

async fn record(activity: &mut Activity, request: pb::RecordSendRequest) -> pb::Send {
    activity
        .record_send(request)
        .await
        .expect("record send")
        .into_inner()
}

async fn set_status(
    activity: &mut Activity,
    send_id: &str,
    status: pb::SendStatus,
) -> Result<pb::Send, tonic::Status> {
    activity
        .update_send_status(pb::UpdateSendStatusRequest {
            send_id: send_id.into(),
            status: status as i32,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn sends(client: &mut Client, id: &str, limit: i32) -> Vec<pb::ListContactSendsResponse> {
    let mut stream = client
        .list_contact_sends(pb::ListContactSendsRequest {
            id: id.into(),
            limit,
            ..Default::default()
        })
        .await
        .expect("sends")
        .into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.message().await.expect("page") {
        pages.push(page);
    }
    pages
}

async fn scheduled(client: &mut Client, id: &str) -> Vec<pb::ScheduledSend> {
    let mut stream = client
        .list_contact_scheduled_sends(pb::ListContactScheduledSendsRequest {
            id: id.into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("scheduled")
        .into_inner();
    let mut items = Vec::new();
    while let Some(page) = stream.message().await.expect("page") {
        items.extend(page.scheduled_sends);
    }
    items
}

async fn timeline_types(client: &mut Client, id: &str) -> Vec<String> {
    let request = pb::ListContactTimelineRequest {
        id: id.into(),
        limit: 1000,
        order: pb::TimelineOrder::OldestFirst as i32,
        ..Default::default()
    };
    timeline(client, request)
        .await
        .into_iter()
        .flat_map(|p| p.entries)
        .map(|e| e.r#type)
        .collect()
}

/// Every per-contact read answers NOT_FOUND for `id`.
async fn assert_every_read_is_not_found(client: &mut Client, id: &str) {
    let id = id.to_owned();
    let result = client
        .list_contact_sends(pb::ListContactSendsRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "sends");
    let result = client
        .list_contact_scheduled_sends(pb::ListContactScheduledSendsRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "scheduled");
    for include_finished in [false, true] {
        let result = client
            .list_contact_sequences(pb::ListContactSequencesRequest {
                id: id.clone(),
                include_finished,
            })
            .await;
        assert_status(result, Code::NotFound, "NOT_FOUND", "sequences");
    }
    let result = client
        .list_contact_segments(pb::ListContactSegmentsRequest { id: id.clone() })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "segments");
    let result = client
        .list_contact_timeline(pb::ListContactTimelineRequest {
            id,
            ..Default::default()
        })
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "timeline");
}
mod lock_order;
mod request_ids;
