//! ActivityService's string fields, for `string_fields`.

use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use pb::track_event_request::Subject;
use tonic::Code;

use super::{Build, Field};
use crate::hostile::strings::Kind;
use crate::support::requests::{Fixture, Req};

/// Appends every string field of ActivityService's RPCs to `fields`.
pub(super) fn string_fields(f: &Fixture, fields: &mut Vec<Field>) {
    use Kind::*;
    let c = f.contact.clone();
    let s = f.send.clone();
    let sch = f.scheduled.clone();
    let ok = Code::Ok;
    let mut add = |name, kind, valid, build: Build| fields.push((name, kind, valid, build));

    let base_send = {
        let c = c.clone();
        move || pb::RecordSendRequest {
            recipient: Some(Recipient::ContactId(c.clone())),
            template_id: "welcome".into(),
            source: pb::SendSource::Transactional as i32,
            ..Default::default()
        }
    };
    let b = base_send.clone();
    add(
        "RecordSend.request_id",
        RequestId,
        ok,
        Box::new(move |v| {
            Req::RecordSend(pb::RecordSendRequest {
                request_id: v,
                ..b()
            })
        }),
    );
    let b = base_send.clone();
    add(
        "RecordSend.contact_id",
        Id,
        ok,
        Box::new(move |v| {
            Req::RecordSend(pb::RecordSendRequest {
                recipient: Some(Recipient::ContactId(v)),
                ..b()
            })
        }),
    );
    let b = base_send.clone();
    add(
        "RecordSend.email",
        Email,
        ok,
        Box::new(move |v| {
            Req::RecordSend(pb::RecordSendRequest {
                recipient: Some(Recipient::Email(v)),
                ..b()
            })
        }),
    );
    let b = base_send.clone();
    add(
        "RecordSend.template_id",
        RequiredText,
        ok,
        Box::new(move |v| {
            Req::RecordSend(pb::RecordSendRequest {
                template_id: v,
                ..b()
            })
        }),
    );
    for name in ["template_name", "subject", "source_id"] {
        let b = base_send.clone();
        let field: &'static str = match name {
            "template_name" => "RecordSend.template_name",
            "subject" => "RecordSend.subject",
            _ => "RecordSend.source_id",
        };
        add(
            field,
            OptionalText,
            ok,
            Box::new(move |v| {
                let mut r = b();
                match name {
                    "template_name" => r.template_name = v,
                    "subject" => r.subject = v,
                    _ => r.source_id = v,
                }
                Req::RecordSend(r)
            }),
        );
    }
    let b = base_send.clone();
    add(
        "RecordSend.scheduled_send_id",
        OptionalId,
        ok,
        Box::new(move |v| {
            Req::RecordSend(pb::RecordSendRequest {
                scheduled_send_id: v,
                ..b()
            })
        }),
    );
    add(
        "UpdateSendStatus.send_id",
        Id,
        ok,
        Box::new(|v| {
            Req::SendStatus(pb::UpdateSendStatusRequest {
                send_id: v,
                status: pb::SendStatus::Sent as i32,
                ..Default::default()
            })
        }),
    );
    let id = s.clone();
    add(
        "UpdateSendStatus.request_id",
        RequestId,
        ok,
        Box::new(move |v| {
            Req::SendStatus(pb::UpdateSendStatusRequest {
                request_id: v,
                send_id: id.clone(),
                status: pb::SendStatus::Sent as i32,
                ..Default::default()
            })
        }),
    );
    add(
        "RecordSendEngagement.send_id",
        Id,
        ok,
        Box::new(|v| Req::Engagement(engagement(v, String::new()))),
    );
    let id = s.clone();
    add(
        "RecordSendEngagement.url",
        OptionalText,
        ok,
        Box::new(move |v| Req::Engagement(engagement(id.clone(), v))),
    );
    let base_schedule = {
        let c = c.clone();
        move || pb::ScheduleSendRequest {
            contact_id: c.clone(),
            template_id: "later".into(),
            scheduled_for: Some(prost_types::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            source: pb::SendSource::Sequence as i32,
            ..Default::default()
        }
    };
    let b = base_schedule.clone();
    add(
        "ScheduleSend.contact_id",
        Id,
        ok,
        Box::new(move |v| {
            Req::Schedule(pb::ScheduleSendRequest {
                contact_id: v,
                ..b()
            })
        }),
    );
    let b = base_schedule.clone();
    add(
        "ScheduleSend.template_id",
        RequiredText,
        ok,
        Box::new(move |v| {
            Req::Schedule(pb::ScheduleSendRequest {
                template_id: v,
                ..b()
            })
        }),
    );
    let b = base_schedule.clone();
    add(
        "ScheduleSend.subject",
        OptionalText,
        ok,
        Box::new(move |v| Req::Schedule(pb::ScheduleSendRequest { subject: v, ..b() })),
    );
    add(
        "CancelScheduledSend.scheduled_send_id",
        Id,
        ok,
        Box::new(|v| {
            Req::Cancel(pb::CancelScheduledSendRequest {
                scheduled_send_id: v,
                ..Default::default()
            })
        }),
    );
    let id = sch.clone();
    add(
        "CancelScheduledSend.request_id",
        RequestId,
        ok,
        Box::new(move |v| {
            Req::Cancel(pb::CancelScheduledSendRequest {
                request_id: v,
                scheduled_send_id: id.clone(),
            })
        }),
    );
    add(
        "EnrolContact.contact_id",
        Id,
        ok,
        Box::new(|v| Req::Enrol(enrol(v, unique("seq"), String::new()))),
    );
    let id = c.clone();
    add(
        "EnrolContact.sequence_id",
        RequiredText,
        ok,
        Box::new(move |v| Req::Enrol(enrol(id.clone(), v, String::new()))),
    );
    let id = c.clone();
    add(
        "EnrolContact.sequence_name",
        OptionalText,
        ok,
        Box::new(move |v| Req::Enrol(enrol(id.clone(), unique("seq"), v))),
    );
    add(
        "UpdateEnrolment.contact_id",
        Id,
        ok,
        Box::new(|v| Req::UpdateEnrolment(update_enrolment(v, "seq".into()))),
    );
    let id = c.clone();
    // `EnrolContact.sequence_id` (above) enrolled the contact in each valid value.
    add(
        "UpdateEnrolment.sequence_id",
        RequiredText,
        ok,
        Box::new(move |v| Req::UpdateEnrolment(update_enrolment(id.clone(), v))),
    );
    add(
        "SetSegmentMembership.contact_id",
        Id,
        ok,
        Box::new(|v| Req::Membership(membership(v, "vip".into(), String::new()))),
    );
    let id = c.clone();
    add(
        "SetSegmentMembership.segment_id",
        RequiredText,
        ok,
        Box::new(move |v| Req::Membership(membership(id.clone(), v, String::new()))),
    );
    let id = c.clone();
    add(
        "SetSegmentMembership.segment_name",
        OptionalText,
        ok,
        Box::new(move |v| Req::Membership(membership(id.clone(), "vip".into(), v))),
    );
    add(
        "TrackEvent.contact_id",
        Id,
        ok,
        Box::new(|v| Req::Track(track(Subject::ContactId(v), "page.viewed".into()))),
    );
    add(
        "TrackEvent.email",
        Email,
        ok,
        Box::new(|v| Req::Track(track(Subject::Email(v), "page.viewed".into()))),
    );
    let id = c.clone();
    add(
        "TrackEvent.name",
        RequiredText,
        ok,
        Box::new(move |v| Req::Track(track(Subject::ContactId(id.clone()), v))),
    );
    let id = c.clone();
    add(
        "TrackEvent.request_id",
        RequestId,
        ok,
        Box::new(move |v| {
            let mut r = track(Subject::ContactId(id.clone()), "x".into());
            r.request_id = v;
            Req::Track(r)
        }),
    );
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn engagement(send_id: String, url: String) -> pb::RecordSendEngagementRequest {
    pb::RecordSendEngagementRequest {
        send_id,
        engagement: pb::Engagement::Clicked as i32,
        url,
        ..Default::default()
    }
}

fn enrol(contact_id: String, sequence_id: String, name: String) -> pb::EnrolContactRequest {
    pb::EnrolContactRequest {
        contact_id,
        sequence_id,
        sequence_name: name,
        ..Default::default()
    }
}

fn update_enrolment(contact_id: String, sequence_id: String) -> pb::UpdateEnrolmentRequest {
    pb::UpdateEnrolmentRequest {
        contact_id,
        sequence_id,
        current_step: Some(1),
        ..Default::default()
    }
}

fn membership(
    contact_id: String,
    segment_id: String,
    name: String,
) -> pb::SetSegmentMembershipRequest {
    pb::SetSegmentMembershipRequest {
        contact_id,
        segment_id,
        segment_name: name,
        member: true,
        ..Default::default()
    }
}

fn track(subject: Subject, name: String) -> pb::TrackEventRequest {
    pb::TrackEventRequest {
        subject: Some(subject),
        name,
        ..Default::default()
    }
}
