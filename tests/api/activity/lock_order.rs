//! Every write locks a contact before its records, the order DeleteContact takes
//! them in; a delete raced against each activity write never deadlocks (PostgreSQL
//! reports a deadlock as 40P01, which this service answers UNAVAILABLE).

use futures::future::join_all;
use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use pb::track_event_request::Subject;
use tonic::Code;

use crate::conformance;
use crate::support::{Activity, Backend, spawn_app};

/// Rounds of one delete against every write about the same contact.
const ROUNDS: usize = 25;

/// What one round races against: the contact and the records the writes touch.
struct Subjects {
    contact: String,
    send: String,
    scheduled: String,
    fulfilled: String,
}

async fn subjects(
    activity: &mut Activity,
    client: &mut crate::support::Client,
    round: usize,
) -> Subjects {
    let contact = client
        .create_contact(pb::CreateContactRequest {
            email: format!("race-{round}-{}@example.com", ulid::Ulid::new()),
            properties: None,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .id;
    let send = activity
        .record_send(pb::RecordSendRequest {
            recipient: Some(Recipient::ContactId(contact.clone())),
            template_id: "t".into(),
            template_name: "T".into(),
            subject: "Hi".into(),
            status: pb::SendStatus::Sent as i32,
            source: pb::SendSource::Transactional as i32,
            ..Default::default()
        })
        .await
        .expect("record a send")
        .into_inner()
        .id;
    let schedule = || {
        let mut activity = activity.clone();
        let contact = contact.clone();
        async move {
            activity
                .schedule_send(pb::ScheduleSendRequest {
                    contact_id: contact,
                    template_id: "t".into(),
                    template_name: "T".into(),
                    subject: "Later".into(),
                    scheduled_for: Some(prost_types::Timestamp {
                        seconds: 4_102_444_800,
                        nanos: 0,
                    }),
                    source: pb::SendSource::Transactional as i32,
                    ..Default::default()
                })
                .await
                .expect("schedule a send")
                .into_inner()
                .id
        }
    };
    let scheduled = schedule().await;
    let fulfilled = schedule().await;
    activity
        .enrol_contact(pb::EnrolContactRequest {
            contact_id: contact.clone(),
            sequence_id: "seq".into(),
            sequence_name: "Seq".into(),
            ..Default::default()
        })
        .await
        .expect("enrol");
    Subjects {
        contact,
        send,
        scheduled,
        fulfilled,
    }
}

/// One racing call: its method and the code it got.
type Call = std::pin::Pin<Box<dyn std::future::Future<Output = (&'static str, Code)> + Send>>;

/// Every activity write about `s`, at once, with the contact's delete.
async fn race(
    activity: &Activity,
    client: &crate::support::Client,
    s: &Subjects,
) -> Vec<(&'static str, Code)> {
    let a = || activity.clone();
    let code = |result: Result<(), tonic::Status>| {
        result.map_or_else(|status| status.code(), |()| Code::Ok)
    };
    let calls: Vec<Call> = vec![
        Box::pin({
            let mut client = client.clone();
            let id = s.contact.clone();
            async move {
                (
                    "DeleteContact",
                    code(
                        client
                            .delete_contact(pb::DeleteContactRequest {
                                id,
                                ..Default::default()
                            })
                            .await
                            .map(drop),
                    ),
                )
            }
        }),
        Box::pin({
            let (mut a, send_id) = (a(), s.send.clone());
            async move {
                let r = a
                    .update_send_status(pb::UpdateSendStatusRequest {
                        send_id,
                        status: pb::SendStatus::Bounced as i32,
                        ..Default::default()
                    })
                    .await;
                ("UpdateSendStatus", code(r.map(drop)))
            }
        }),
        Box::pin({
            let (mut a, send_id) = (a(), s.send.clone());
            async move {
                let r = a
                    .record_send_engagement(pb::RecordSendEngagementRequest {
                        send_id,
                        engagement: pb::Engagement::Opened as i32,
                        ..Default::default()
                    })
                    .await;
                ("RecordSendEngagement", code(r.map(drop)))
            }
        }),
        Box::pin({
            let (mut a, scheduled_send_id) = (a(), s.scheduled.clone());
            async move {
                let r = a
                    .cancel_scheduled_send(pb::CancelScheduledSendRequest {
                        scheduled_send_id,
                        ..Default::default()
                    })
                    .await;
                ("CancelScheduledSend", code(r.map(drop)))
            }
        }),
        Box::pin({
            let (mut a, contact, scheduled_send_id) = (a(), s.contact.clone(), s.fulfilled.clone());
            async move {
                let r = a
                    .record_send(pb::RecordSendRequest {
                        recipient: Some(Recipient::ContactId(contact)),
                        template_id: "t".into(),
                        template_name: "T".into(),
                        subject: "Now".into(),
                        source: pb::SendSource::Transactional as i32,
                        scheduled_send_id,
                        ..Default::default()
                    })
                    .await;
                ("RecordSend", code(r.map(drop)))
            }
        }),
        Box::pin({
            let (mut a, contact_id) = (a(), s.contact.clone());
            async move {
                let r = a
                    .update_enrolment(pb::UpdateEnrolmentRequest {
                        contact_id,
                        sequence_id: "seq".into(),
                        current_step: Some(2),
                        ..Default::default()
                    })
                    .await;
                ("UpdateEnrolment", code(r.map(drop)))
            }
        }),
        Box::pin({
            let (mut a, contact_id) = (a(), s.contact.clone());
            async move {
                let r = a
                    .set_segment_membership(pb::SetSegmentMembershipRequest {
                        contact_id,
                        segment_id: "seg".into(),
                        segment_name: "Seg".into(),
                        member: true,
                        ..Default::default()
                    })
                    .await;
                ("SetSegmentMembership", code(r.map(drop)))
            }
        }),
        Box::pin({
            let (mut a, contact) = (a(), s.contact.clone());
            async move {
                let r = a
                    .track_event(pb::TrackEventRequest {
                        subject: Some(Subject::ContactId(contact)),
                        name: "email.unsubscribed".into(),
                        ..Default::default()
                    })
                    .await;
                ("TrackEvent", code(r.map(drop)))
            }
        }),
    ];
    join_all(calls).await
}

async fn deletes_raced_against_every_activity_write_never_deadlock(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut activity, mut client) = (app.activity(), app.client());
    let mut seen = std::collections::BTreeMap::<(&str, String), usize>::new();
    for round in 0..ROUNDS {
        let s = subjects(&mut activity, &mut client, round).await;
        for (method, code) in race(&activity, &client, &s).await {
            *seen.entry((method, format!("{code:?}"))).or_default() += 1;
            assert!(
                matches!(code, Code::Ok | Code::NotFound | Code::FailedPrecondition),
                "round {round}: {method} answered {code:?} while its contact was deleted"
            );
        }
    }
    // Both orders happened: some writes ran before the delete, some found it done.
    let deleted_first = seen
        .iter()
        .any(|((m, c), _)| *m != "DeleteContact" && c == "NotFound");
    let wrote_first = seen
        .iter()
        .any(|((m, c), _)| *m != "DeleteContact" && c == "Ok");
    assert!(
        deleted_first && wrote_first,
        "the race went one way only: {seen:?}"
    );
}

conformance!(deletes_raced_against_every_activity_write_never_deadlock);
