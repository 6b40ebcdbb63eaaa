//! Tenant isolation over every RPC: with tenant A's ids, emails, cursors and request
//! ids, tenant B reads nothing of A's, changes nothing of A's, and writes only its own.

use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use pb::track_event_request::Subject;
use tonic::Code;

use crate::conformance;
use crate::hostile::strings::check;
use crate::support::requests::{Fixture, Req, fixture};
use crate::support::{Activity, Backend, Client, spawn_app};

/// Everything tenant A can read about its fixture contact.
async fn snapshot(clients: &mut (Client, Activity), f: &Fixture) -> String {
    let (c, _) = clients;
    let contact = c
        .get_contact(pb::GetContactRequest {
            id: f.contact.clone(),
        })
        .await
        .expect("A reads its contact")
        .into_inner();
    let mut out = format!("{contact:?}\n");
    let mut timeline = c
        .list_contact_timeline(pb::ListContactTimelineRequest {
            id: f.contact.clone(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner();
    while let Some(page) = timeline.message().await.expect("page") {
        out.push_str(&format!("{:?}\n", page.entries));
    }
    let mut sends = c
        .list_contact_sends(pb::ListContactSendsRequest {
            id: f.contact.clone(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("sends")
        .into_inner();
    while let Some(page) = sends.message().await.expect("page") {
        out.push_str(&format!("{:?}\n", page.sends));
    }
    let mut scheduled = c
        .list_contact_scheduled_sends(pb::ListContactScheduledSendsRequest {
            id: f.contact.clone(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("scheduled")
        .into_inner();
    while let Some(page) = scheduled.message().await.expect("page") {
        out.push_str(&format!("{:?}\n", page.scheduled_sends));
    }
    let sequences = c
        .list_contact_sequences(pb::ListContactSequencesRequest {
            id: f.contact.clone(),
            include_finished: true,
        })
        .await
        .expect("sequences")
        .into_inner();
    let segments = c
        .list_contact_segments(pb::ListContactSegmentsRequest {
            id: f.contact.clone(),
        })
        .await
        .expect("segments")
        .into_inner();
    out.push_str(&format!("{sequences:?}\n{segments:?}\n"));
    out
}

/// Tenant B's attempts on A's records: (what, request, code).
fn attempts(a: &Fixture, b: &Fixture) -> Vec<(String, Req, Code)> {
    let nf = Code::NotFound;
    let invalid = Code::InvalidArgument;
    let id = || a.contact.clone();
    let mut cases: Vec<(&str, Req, Code)> = vec![
        (
            "get A's contact",
            Req::Get(pb::GetContactRequest { id: id() }),
            nf,
        ),
        (
            "update A's contact",
            Req::Update(pb::UpdateContactRequest {
                id: id(),
                email: Some("stolen@example.com".into()),
                properties: None,
                ..Default::default()
            }),
            nf,
        ),
        (
            "delete A's contact",
            Req::Delete(pb::DeleteContactRequest {
                id: id(),
                ..Default::default()
            }),
            nf,
        ),
        (
            "A's sends",
            Req::Sends(pb::ListContactSendsRequest {
                id: id(),
                ..Default::default()
            }),
            nf,
        ),
        (
            "A's scheduled sends",
            Req::Scheduled(pb::ListContactScheduledSendsRequest {
                id: id(),
                ..Default::default()
            }),
            nf,
        ),
        (
            "A's sequences",
            Req::Sequences(pb::ListContactSequencesRequest {
                id: id(),
                include_finished: true,
            }),
            nf,
        ),
        (
            "A's segments",
            Req::Segments(pb::ListContactSegmentsRequest { id: id() }),
            nf,
        ),
        (
            "A's timeline",
            Req::Timeline(pb::ListContactTimelineRequest {
                id: id(),
                ..Default::default()
            }),
            nf,
        ),
        (
            "a send to A's contact",
            Req::RecordSend(pb::RecordSendRequest {
                recipient: Some(Recipient::ContactId(id())),
                template_id: "t".into(),
                source: pb::SendSource::Transactional as i32,
                ..Default::default()
            }),
            nf,
        ),
        (
            "A's send status",
            Req::SendStatus(pb::UpdateSendStatusRequest {
                send_id: a.send.clone(),
                status: pb::SendStatus::Bounced as i32,
                ..Default::default()
            }),
            nf,
        ),
        (
            "an engagement on A's send",
            Req::Engagement(pb::RecordSendEngagementRequest {
                send_id: a.send.clone(),
                engagement: pb::Engagement::Clicked as i32,
                ..Default::default()
            }),
            nf,
        ),
        (
            "a schedule for A's contact",
            Req::Schedule(pb::ScheduleSendRequest {
                contact_id: id(),
                template_id: "t".into(),
                scheduled_for: Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                }),
                source: pb::SendSource::Sequence as i32,
                ..Default::default()
            }),
            nf,
        ),
        (
            "cancel A's scheduled send",
            Req::Cancel(pb::CancelScheduledSendRequest {
                scheduled_send_id: a.scheduled.clone(),
                ..Default::default()
            }),
            nf,
        ),
        (
            "enrol A's contact",
            Req::Enrol(pb::EnrolContactRequest {
                contact_id: id(),
                sequence_id: "other".into(),
                ..Default::default()
            }),
            nf,
        ),
        (
            "A's enrolment",
            Req::UpdateEnrolment(pb::UpdateEnrolmentRequest {
                contact_id: id(),
                sequence_id: "seq".into(),
                status: pb::EnrolmentStatus::Exited as i32,
                ..Default::default()
            }),
            nf,
        ),
        (
            "A's segment membership",
            Req::Membership(pb::SetSegmentMembershipRequest {
                contact_id: id(),
                segment_id: "vip".into(),
                member: false,
                ..Default::default()
            }),
            nf,
        ),
        (
            "an event of A's contact",
            Req::Track(pb::TrackEventRequest {
                subject: Some(Subject::ContactId(id())),
                name: "email.unsubscribed".into(),
                ..Default::default()
            }),
            nf,
        ),
    ];
    // A's cursors, on A's contact and on B's own: refused before any lookup.
    let cursors = [
        ("A's contacts cursor", &a.contacts_cursor),
        ("A's sends cursor", &a.sends_cursor),
        ("A's scheduled-sends cursor", &a.scheduled_cursor),
        ("A's timeline cursor", &a.timeline_cursor),
    ];
    let lists = |contact: &str, cursor: &str| {
        vec![
            Req::List(pb::ListContactsRequest {
                cursor: cursor.into(),
                ..Default::default()
            }),
            Req::Sends(pb::ListContactSendsRequest {
                id: contact.into(),
                cursor: cursor.into(),
                ..Default::default()
            }),
            Req::Scheduled(pb::ListContactScheduledSendsRequest {
                id: contact.into(),
                cursor: cursor.into(),
                ..Default::default()
            }),
            Req::Timeline(pb::ListContactTimelineRequest {
                id: contact.into(),
                cursor: cursor.into(),
                ..Default::default()
            }),
        ]
    };
    let mut out: Vec<(String, Req, Code)> = cases
        .drain(..)
        .map(|(what, req, code)| (what.to_owned(), req, code))
        .collect();
    for (name, cursor) in cursors {
        for contact in [&a.contact, &b.contact] {
            for req in lists(contact, cursor) {
                let whose = if contact == &a.contact { "A's" } else { "B's" };
                let what = format!("{name} on {} of {whose} contact", req.path());
                out.push((what, req, invalid));
            }
        }
    }
    out
}

async fn another_tenant_reaches_nothing_through_any_rpc(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut a_clients = (app.client(), app.activity());
    let a = fixture(&mut a_clients).await;
    let b_key = app.other_tenant_key().await;
    let mut b_clients = (
        app.client_with_key(Some(&b_key)),
        app.activity_with_key(&b_key),
    );
    let b = fixture(&mut b_clients).await;
    let before = snapshot(&mut a_clients, &a).await;

    let cases = attempts(&a, &b);
    let tried = cases.len();
    for (what, request, code) in cases {
        let _ = check(&mut b_clients, &app, &format!("B: {what}"), request, code).await;
    }
    let after_attempts = snapshot(&mut a_clients, &a).await;
    assert_eq!(
        after_attempts, before,
        "A's records are untouched by B's attempts"
    );

    // Lookups by A's email and searches for it find nothing of A's in B.
    let found = b_clients
        .0
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: a.email.clone(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(found.contact, None, "B looks up A's email");
    let batch = b_clients
        .0
        .batch_get_contacts(pb::BatchGetContactsRequest {
            ids: vec![a.contact.clone()],
            emails: vec![a.email.clone()],
        })
        .await
        .expect("batch get")
        .into_inner();
    assert!(batch.contacts.is_empty(), "B batch-gets A's id and email");
    assert_eq!(batch.missing, [a.contact.clone(), a.email.clone()]);
    let mut listed = b_clients
        .0
        .list_contacts(pb::ListContactsRequest {
            search: a.email.clone(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    while let Some(page) = listed.message().await.expect("page") {
        assert!(page.contacts.is_empty(), "B's search for A's email");
    }
    // Writes by A's email make B's own contact; A's request ids mean nothing to B.
    let by_email = |request_id: &str| pb::RecordSendRequest {
        request_id: request_id.into(),
        recipient: Some(Recipient::Email(a.email.clone())),
        template_id: "t".into(),
        source: pb::SendSource::Transactional as i32,
        ..Default::default()
    };
    let a_send = a_clients
        .1
        .record_send(by_email("shared-request"))
        .await
        .expect("A records a send")
        .into_inner();
    let before = snapshot(&mut a_clients, &a).await;
    let b_send = b_clients
        .1
        .record_send(by_email("shared-request"))
        .await
        .expect("B records with the same request id")
        .into_inner();
    assert_ne!(b_send.id, a_send.id, "not A's remembered result");
    assert_ne!(b_send.contact_id, a.contact, "B's own contact");
    let event = b_clients
        .1
        .track_event(pb::TrackEventRequest {
            subject: Some(Subject::Email(a.email.clone())),
            name: "email.unsubscribed".into(),
            ..Default::default()
        })
        .await
        .expect("B tracks by A's email")
        .into_inner();
    assert_ne!(event.contact_id, a.contact);

    let after = snapshot(&mut a_clients, &a).await;
    assert_eq!(after, before, "A's records are untouched by B's own writes");
    println!("isolation cases tried: {}", tried + 4);
}

conformance!(another_tenant_reaches_nothing_through_any_rpc);
