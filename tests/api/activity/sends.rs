//! RecordSend, UpdateSendStatus and RecordSendEngagement: a send's lifecycle, the
//! statuses and engagements it records, and how sends are listed.

use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use serde_json::json;
use tonic::Code;

use super::{record, send_to, sends, set_status, timeline_types};
use crate::conformance;
use crate::support::{Backend, assert_status, create, spawn_app};

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
    let listed = crate::support::pages(
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

conformance!(
    sends_are_listed_newest_first_across_pages_and_resume_by_cursor,
    record_send_by_unknown_email_creates_the_contact,
    send_lifecycle_stamps_times_and_bounces_suppress_the_contact,
    every_send_status_leaves_exactly_its_entry,
);
