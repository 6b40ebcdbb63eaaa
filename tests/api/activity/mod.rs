//! ActivityService: each ingestion RPC, its lifecycle rules and idempotency, and the
//! ContactsService reads it feeds.

use std::collections::BTreeMap;

use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use pb::track_event_request::Subject;
use serde_json::json;
use tonic::Code;

use crate::conformance;
use crate::contacts::crud::{create, props};
use crate::contacts::timeline::timeline;
use crate::support::{Activity, Backend, Client, assert_status, spawn_app};

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

async fn sends_are_listed_newest_first_across_pages_and_resume_by_cursor(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "s@example.com", json!({})).await;
    let mut ids = Vec::new();
    for i in 0..23 {
        ids.push(
            record(&mut activity, send_to(&contact.id, &format!("tpl{i}")))
                .await
                .id,
        );
    }
    ids.reverse();
    let pages = sends(&mut client, &contact.id, 5).await;
    assert_eq!(pages.len(), 5);
    let listed: Vec<String> = pages
        .iter()
        .flat_map(|p| p.sends.iter().map(|s| s.id.clone()))
        .collect();
    assert_eq!(listed, ids, "newest first");
    let first = &pages[0];
    assert_eq!(first.sends[0].status, pb::SendStatus::Queued as i32);
    assert_eq!(first.sends[0].email, "s@example.com");
    assert!(first.sends[0].sent_at.is_none());
    let mut resumed = client
        .list_contact_sends(pb::ListContactSendsRequest {
            id: contact.id.clone(),
            limit: 5,
            cursor: pages[2].next_cursor.clone(),
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner();
    let mut rest = Vec::new();
    while let Some(page) = resumed.message().await.expect("page") {
        rest.extend(page.sends.into_iter().map(|s| s.id));
    }
    assert_eq!(rest, ids[15..].to_vec());
}

async fn record_send_by_unknown_email_creates_the_contact(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let mut request = send_to("", "welcome");
    request.recipient = Some(Recipient::Email("New.Person@Example.com".into()));
    let send = record(&mut activity, request.clone()).await;
    let contact = client
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: "new.person@example.com".into(),
        })
        .await
        .expect("lookup")
        .into_inner()
        .contact
        .expect("the contact was created");
    assert_eq!(send.contact_id, contact.id);
    assert_eq!(contact.email, "New.Person@Example.com");
    // A second send by email finds the same contact.
    request.recipient = Some(Recipient::Email("NEW.PERSON@example.com".into()));
    let again = record(&mut activity, request).await;
    assert_eq!(again.contact_id, contact.id);
    assert_eq!(
        timeline_types(&mut client, &contact.id).await,
        vec!["contact.created", "email.queued", "email.queued"]
    );
}

async fn send_lifecycle_stamps_times_and_bounces_suppress_the_contact(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "life@example.com", json!({})).await;
    let send = record(&mut activity, send_to(&contact.id, "t")).await;
    let sent = set_status(&mut activity, &send.id, pb::SendStatus::Sent)
        .await
        .expect("sent");
    assert!(sent.sent_at.is_some());
    let delivered = set_status(&mut activity, &send.id, pb::SendStatus::Delivered)
        .await
        .expect("delivered");
    assert!(delivered.delivered_at.is_some());
    assert_eq!(delivered.sent_at, sent.sent_at);
    let same = set_status(&mut activity, &send.id, pb::SendStatus::Delivered)
        .await
        .expect("repeat is a no-op");
    assert_eq!(same, delivered);
    let result = set_status(&mut activity, &send.id, pb::SendStatus::Queued).await;
    assert_status(
        result,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "backwards",
    );
    let opened = activity
        .record_send_engagement(pb::RecordSendEngagementRequest {
            send_id: send.id.clone(),
            engagement: pb::Engagement::Opened as i32,
            ..Default::default()
        })
        .await
        .expect("open")
        .into_inner();
    assert!(opened.opened_at.is_some());
    let clicked = activity
        .record_send_engagement(pb::RecordSendEngagementRequest {
            send_id: send.id.clone(),
            engagement: pb::Engagement::Clicked as i32,
            url: "https://example.com/x".into(),
            ..Default::default()
        })
        .await
        .expect("click")
        .into_inner();
    assert!(clicked.clicked_at.is_some());
    assert_eq!(clicked.opened_at, opened.opened_at, "the first open stays");
    let bounced = set_status(&mut activity, &send.id, pb::SendStatus::Bounced)
        .await
        .expect("bounce");
    assert!(bounced.bounced_at.is_some());
    let result = set_status(&mut activity, &send.id, pb::SendStatus::Complained).await;
    assert_status(
        result,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "after a bounce",
    );

    let fetched = client
        .get_contact(pb::GetContactRequest {
            id: contact.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert!(fetched.suppressed, "a bounce suppresses the contact");
    assert_eq!(
        timeline_types(&mut client, &contact.id).await,
        vec![
            "contact.created",
            "email.queued",
            "email.sent",
            "email.delivered",
            "email.opened",
            "email.clicked",
            "email.bounced",
            "contact.suppressed"
        ]
    );
    // A second bounce on another send leaves no second suppression entry.
    let other = record(&mut activity, send_to(&contact.id, "t2")).await;
    set_status(&mut activity, &other.id, pb::SendStatus::Bounced)
        .await
        .expect("bounce");
    let types = timeline_types(&mut client, &contact.id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "contact.suppressed").count(),
        1
    );
    let listed = crate::contacts::list::pages(
        &mut client,
        pb::ListContactsRequest {
            suppressed: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        listed[0].contacts.len(),
        1,
        "the suppressed filter finds it"
    );

    let queued = record(&mut activity, send_to(&contact.id, "t3")).await;
    let result = activity
        .record_send_engagement(pb::RecordSendEngagementRequest {
            send_id: queued.id,
            engagement: pb::Engagement::Opened as i32,
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "open before send",
    );
    let result = set_status(
        &mut activity,
        "snd_01JD0000000000000000000000",
        pb::SendStatus::Sent,
    )
    .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "unknown send");
}

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

async fn enrolments_move_through_their_lifecycle(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "seq@example.com", json!({})).await;
    let enrol = |sequence: &str| pb::EnrolContactRequest {
        contact_id: contact.id.clone(),
        sequence_id: sequence.into(),
        sequence_name: format!("{sequence} name"),
        ..Default::default()
    };
    let e = activity
        .enrol_contact(enrol("onboarding"))
        .await
        .expect("enrol")
        .into_inner();
    assert_eq!(e.status, pb::EnrolmentStatus::Active as i32);
    assert_eq!(e.current_step, 0);
    activity
        .enrol_contact(enrol("upsell"))
        .await
        .expect("enrol second");
    let result = activity.enrol_contact(enrol("onboarding")).await;
    assert_status(
        result,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "already enrolled",
    );

    let update = |sequence: &str, status: pb::EnrolmentStatus, step: Option<i32>| {
        pb::UpdateEnrolmentRequest {
            contact_id: contact.id.clone(),
            sequence_id: sequence.into(),
            status: status as i32,
            current_step: step,
            ..Default::default()
        }
    };
    let stepped = activity
        .update_enrolment(update(
            "onboarding",
            pb::EnrolmentStatus::Unspecified,
            Some(2),
        ))
        .await
        .expect("step")
        .into_inner();
    assert_eq!(stepped.current_step, 2);
    assert_eq!(stepped.status, pb::EnrolmentStatus::Active as i32);
    let done = activity
        .update_enrolment(update("onboarding", pb::EnrolmentStatus::Completed, None))
        .await
        .expect("complete")
        .into_inner();
    assert!(done.completed_at.is_some());
    let result = activity
        .update_enrolment(update("onboarding", pb::EnrolmentStatus::Active, None))
        .await;
    assert_status(
        result,
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "finished enrolment",
    );
    let result = activity
        .update_enrolment(update("nope", pb::EnrolmentStatus::Paused, None))
        .await;
    assert_status(result, Code::NotFound, "NOT_FOUND", "unknown enrolment");

    let current = client
        .list_contact_sequences(pb::ListContactSequencesRequest {
            id: contact.id.clone(),
            include_finished: false,
        })
        .await
        .expect("sequences")
        .into_inner();
    let names: Vec<&str> = current
        .enrolments
        .iter()
        .map(|e| e.sequence_id.as_str())
        .collect();
    assert_eq!(names, vec!["upsell"], "finished ones are hidden by default");
    let all = client
        .list_contact_sequences(pb::ListContactSequencesRequest {
            id: contact.id.clone(),
            include_finished: true,
        })
        .await
        .expect("sequences")
        .into_inner();
    assert_eq!(all.enrolments.len(), 2);
    let again = activity
        .enrol_contact(enrol("onboarding"))
        .await
        .expect("re-enrol after completion")
        .into_inner();
    assert_eq!(again.status, pb::EnrolmentStatus::Active as i32);
    assert!(again.completed_at.is_none());
    assert_eq!(
        timeline_types(&mut client, &contact.id).await,
        vec![
            "contact.created",
            "sequence.enrolled",
            "sequence.enrolled",
            "sequence.updated",
            "sequence.completed",
            "sequence.enrolled"
        ]
    );
}

async fn segment_memberships_join_and_leave(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "seg@example.com", json!({})).await;
    let set = |segment: &str, member: bool| pb::SetSegmentMembershipRequest {
        contact_id: contact.id.clone(),
        segment_id: segment.into(),
        segment_name: format!("{segment} name"),
        member,
        ..Default::default()
    };
    let joined = activity
        .set_segment_membership(set("vip", true))
        .await
        .expect("join")
        .into_inner();
    assert!(joined.changed);
    assert_eq!(
        joined.membership.as_ref().map(|m| m.segment_id.as_str()),
        Some("vip")
    );
    let repeat = activity
        .set_segment_membership(set("vip", true))
        .await
        .expect("join again")
        .into_inner();
    assert!(!repeat.changed);
    activity
        .set_segment_membership(set("active", true))
        .await
        .expect("join");
    let left = activity
        .set_segment_membership(set("vip", false))
        .await
        .expect("leave")
        .into_inner();
    assert!(left.changed && left.membership.is_none());
    let not_member = activity
        .set_segment_membership(set("vip", false))
        .await
        .expect("leave again")
        .into_inner();
    assert!(!not_member.changed);
    let segments = client
        .list_contact_segments(pb::ListContactSegmentsRequest {
            id: contact.id.clone(),
        })
        .await
        .expect("segments")
        .into_inner();
    let ids: Vec<&str> = segments
        .memberships
        .iter()
        .map(|m| m.segment_id.as_str())
        .collect();
    assert_eq!(ids, vec!["active"]);
    assert_eq!(
        timeline_types(&mut client, &contact.id).await,
        vec![
            "contact.created",
            "segment.entered",
            "segment.entered",
            "segment.exited"
        ]
    );
}

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

async fn every_send_status_leaves_exactly_its_entry(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut client, mut activity) = (app.client(), app.activity());
    let contact = create(&mut client, "statuses@example.com", json!({})).await;
    let paths: &[&[pb::SendStatus]] = &[
        &[pb::SendStatus::Rejected],
        &[
            pb::SendStatus::Sent,
            pb::SendStatus::Delivered,
            pb::SendStatus::Complained,
        ],
        &[pb::SendStatus::Delivered],
        &[pb::SendStatus::Bounced],
    ];
    let mut expected = vec!["contact.created".to_owned()];
    for path in paths {
        let send = record(&mut activity, send_to(&contact.id, "t")).await;
        expected.push("email.queued".into());
        for status in *path {
            let updated = set_status(&mut activity, &send.id, *status)
                .await
                .unwrap_or_else(|s| panic!("{status:?}: {s:?}"));
            assert_eq!(updated.status, *status as i32);
            let name = status
                .as_str_name()
                .trim_start_matches("SEND_STATUS_")
                .to_lowercase();
            expected.push(format!("email.{name}"));
            if matches!(status, pb::SendStatus::Complained) {
                expected.push("contact.suppressed".into());
            }
        }
    }
    let rejected = &sends(&mut client, &contact.id, 100).await[0].sends[3];
    assert_eq!(rejected.status, pb::SendStatus::Rejected as i32);
    assert!(rejected.sent_at.is_none(), "a rejected send was never sent");
    let delivered_directly = &sends(&mut client, &contact.id, 100).await[0].sends[1];
    assert!(
        delivered_directly.sent_at.is_some(),
        "delivery implies it was sent"
    );
    assert_eq!(timeline_types(&mut client, &contact.id).await, expected);
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
    sends_are_listed_newest_first_across_pages_and_resume_by_cursor,
    record_send_by_unknown_email_creates_the_contact,
    send_lifecycle_stamps_times_and_bounces_suppress_the_contact,
    scheduled_sends_list_pending_earliest_first_and_cancel_or_fulfil,
    enrolments_move_through_their_lifecycle,
    segment_memberships_join_and_leave,
    tracked_events_create_contacts_and_unsubscribe,
    a_retried_request_id_returns_the_first_result_and_writes_once,
    deleting_a_contact_erases_all_of_its_activity,
    activity_of_another_tenant_is_out_of_reach,
    invalid_ingestion_requests_are_invalid_argument,
    reads_of_an_unknown_contact_are_not_found,
    every_send_status_leaves_exactly_its_entry,
    every_ingestion_rpc_is_idempotent,
);
