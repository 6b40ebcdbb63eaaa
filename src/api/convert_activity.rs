//! Protobuf <-> domain for the activity records and the ingestion requests.

use chrono::{DateTime, Utc};
use prost::Message;
use sha2::{Digest, Sha256};

use super::convert::{from_struct, timestamp};
use super::pb;
use crate::domain::{
    ContactId, ContactRef, Email, Engagement, Enrolment, EnrolmentChange, EnrolmentStatus,
    Idempotency, Membership, MembershipChange, NewEnrolment, NewEvent, NewScheduledSend, NewSend,
    Properties, ScheduledSend, ScheduledStatus, SendEngagement, SendRecord, SendSource, SendStatus,
    SendStatusChange, ValidationError, parse_prefixed_id, text,
};

/// Limits on the free-text fields other services send.
const ID_CHARS: usize = 256;
const NAME_CHARS: usize = 256;
const SUBJECT_CHARS: usize = 1000;
const URL_CHARS: usize = 2048;
const REQUEST_ID_CHARS: usize = 128;

fn ts(time: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    time.map(timestamp)
}

pub fn send(send: SendRecord) -> pb::Send {
    pb::Send {
        id: send.id,
        contact_id: send.contact_id.into_string(),
        email: send.email,
        template_id: send.template_id,
        template_name: send.template_name,
        subject: send.subject,
        status: send_status_to_pb(send.status) as i32,
        source: source_to_pb(send.source) as i32,
        source_id: send.source_id,
        created_at: Some(timestamp(send.created_at)),
        sent_at: ts(send.sent_at),
        delivered_at: ts(send.delivered_at),
        opened_at: ts(send.opened_at),
        clicked_at: ts(send.clicked_at),
        bounced_at: ts(send.bounced_at),
        complained_at: ts(send.complained_at),
    }
}

pub fn scheduled_send(s: ScheduledSend) -> pb::ScheduledSend {
    pb::ScheduledSend {
        id: s.id,
        contact_id: s.contact_id.into_string(),
        email: s.email,
        template_id: s.template_id,
        template_name: s.template_name,
        subject: s.subject,
        scheduled_for: Some(timestamp(s.scheduled_for)),
        source: source_to_pb(s.source) as i32,
        source_id: s.source_id,
        step: s.step,
        status: match s.status {
            ScheduledStatus::Pending => pb::ScheduledSendStatus::Pending,
            ScheduledStatus::Sent => pb::ScheduledSendStatus::Sent,
            ScheduledStatus::Cancelled => pb::ScheduledSendStatus::Cancelled,
        } as i32,
        created_at: Some(timestamp(s.created_at)),
    }
}

pub fn enrolment(e: Enrolment) -> pb::SequenceEnrolment {
    pb::SequenceEnrolment {
        sequence_id: e.sequence_id,
        sequence_name: e.sequence_name,
        status: match e.status {
            EnrolmentStatus::Active => pb::EnrolmentStatus::Active,
            EnrolmentStatus::Paused => pb::EnrolmentStatus::Paused,
            EnrolmentStatus::Completed => pb::EnrolmentStatus::Completed,
            EnrolmentStatus::Exited => pb::EnrolmentStatus::Exited,
        } as i32,
        current_step: e.current_step,
        enrolled_at: Some(timestamp(e.enrolled_at)),
        updated_at: Some(timestamp(e.updated_at)),
        completed_at: ts(e.completed_at),
        exited_at: ts(e.exited_at),
    }
}

pub fn membership(m: Membership) -> pb::SegmentMembership {
    pb::SegmentMembership {
        segment_id: m.segment_id,
        segment_name: m.segment_name,
        joined_at: Some(timestamp(m.joined_at)),
    }
}

fn send_status_to_pb(status: SendStatus) -> pb::SendStatus {
    match status {
        SendStatus::Queued => pb::SendStatus::Queued,
        SendStatus::Sent => pb::SendStatus::Sent,
        SendStatus::Delivered => pb::SendStatus::Delivered,
        SendStatus::Bounced => pb::SendStatus::Bounced,
        SendStatus::Complained => pb::SendStatus::Complained,
        SendStatus::Rejected => pb::SendStatus::Rejected,
    }
}

fn source_to_pb(source: SendSource) -> pb::SendSource {
    match source {
        SendSource::Transactional => pb::SendSource::Transactional,
        SendSource::Sequence => pb::SendSource::Sequence,
        SendSource::Campaign => pb::SendSource::Campaign,
    }
}

fn send_status(raw: i32, field: &str) -> Result<Option<SendStatus>, ValidationError> {
    Ok(match pb::SendStatus::try_from(raw) {
        Ok(pb::SendStatus::Unspecified) => None,
        Ok(pb::SendStatus::Queued) => Some(SendStatus::Queued),
        Ok(pb::SendStatus::Sent) => Some(SendStatus::Sent),
        Ok(pb::SendStatus::Delivered) => Some(SendStatus::Delivered),
        Ok(pb::SendStatus::Bounced) => Some(SendStatus::Bounced),
        Ok(pb::SendStatus::Complained) => Some(SendStatus::Complained),
        Ok(pb::SendStatus::Rejected) => Some(SendStatus::Rejected),
        Err(_) => return Err(ValidationError::new(field, "is not a known SendStatus")),
    })
}

fn source(raw: i32) -> Result<SendSource, ValidationError> {
    match pb::SendSource::try_from(raw) {
        Ok(pb::SendSource::Transactional) => Ok(SendSource::Transactional),
        Ok(pb::SendSource::Sequence) => Ok(SendSource::Sequence),
        Ok(pb::SendSource::Campaign) => Ok(SendSource::Campaign),
        Ok(pb::SendSource::Unspecified) => Err(ValidationError::new("source", "is required")),
        Err(_) => Err(ValidationError::new("source", "is not a known SendSource")),
    }
}

fn enrolment_status(raw: i32) -> Result<Option<EnrolmentStatus>, ValidationError> {
    Ok(match pb::EnrolmentStatus::try_from(raw) {
        Ok(pb::EnrolmentStatus::Unspecified) => None,
        Ok(pb::EnrolmentStatus::Active) => Some(EnrolmentStatus::Active),
        Ok(pb::EnrolmentStatus::Paused) => Some(EnrolmentStatus::Paused),
        Ok(pb::EnrolmentStatus::Completed) => Some(EnrolmentStatus::Completed),
        Ok(pb::EnrolmentStatus::Exited) => Some(EnrolmentStatus::Exited),
        Err(_) => {
            return Err(ValidationError::new(
                "status",
                "is not a known EnrolmentStatus",
            ));
        }
    })
}

/// A caller-given time, at the microsecond precision the stores keep; now when unset.
pub fn time(
    raw: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<DateTime<Utc>, ValidationError> {
    let Some(raw) = raw else {
        return Ok(crate::domain::now());
    };
    required_time(raw, field)
}

fn required_time(
    raw: prost_types::Timestamp,
    field: &str,
) -> Result<DateTime<Utc>, ValidationError> {
    let valid = (0..1_000_000_000).contains(&raw.nanos)
        // 0001-01-01 to 9999-12-31, as google.protobuf.Timestamp allows.
        && (-62_135_596_800..=253_402_300_799).contains(&raw.seconds);
    if !valid {
        return Err(ValidationError::new(field, "is not a valid timestamp"));
    }
    let micros = raw.seconds * 1_000_000 + i64::from(raw.nanos / 1000);
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| ValidationError::new(field, "is not a valid timestamp"))
}

/// The request's idempotency key. The fingerprint covers the whole request, so the
/// same id with different content is told apart from a retry.
pub fn idempotency<M: Message>(
    method: &'static str,
    request_id: &str,
    request: &M,
) -> Result<Option<Idempotency>, ValidationError> {
    if request_id.is_empty() {
        return Ok(None);
    }
    let request_id = text(request_id, "request_id", REQUEST_ID_CHARS, true)?;
    Ok(Some(Idempotency {
        request_id,
        method,
        fingerprint: Sha256::digest(request.encode_to_vec()).into(),
    }))
}

fn contact_id(raw: &str) -> Result<ContactId, ValidationError> {
    ContactId::parse(raw, "contact_id")
}

fn contact_ref(
    id: Option<String>,
    email: Option<String>,
    what: &str,
) -> Result<ContactRef, ValidationError> {
    match (id, email) {
        (Some(id), _) => Ok(ContactRef::Id(contact_id(&id)?)),
        (None, Some(email)) => Ok(ContactRef::Email(Email::parse(&email, "email")?)),
        (None, None) => Err(ValidationError::new(
            what,
            "either `contact_id` or `email` is required",
        )),
    }
}

pub fn new_send(r: pb::RecordSendRequest) -> Result<NewSend, ValidationError> {
    let (id, email) = match r.recipient {
        Some(pb::record_send_request::Recipient::ContactId(id)) => (Some(id), None),
        Some(pb::record_send_request::Recipient::Email(email)) => (None, Some(email)),
        None => (None, None),
    };
    let status = match send_status(r.status, "status")? {
        None | Some(SendStatus::Queued) => SendStatus::Queued,
        Some(SendStatus::Sent) => SendStatus::Sent,
        Some(_) => {
            return Err(ValidationError::new(
                "status",
                "a new send is QUEUED or SENT",
            ));
        }
    };
    let scheduled_send_id = (!r.scheduled_send_id.is_empty())
        .then(|| parse_prefixed_id(&r.scheduled_send_id, "sch", "scheduled_send_id"))
        .transpose()?;
    Ok(NewSend {
        contact: contact_ref(id, email, "recipient")?,
        template_id: text(&r.template_id, "template_id", ID_CHARS, true)?,
        template_name: text(&r.template_name, "template_name", NAME_CHARS, false)?,
        subject: text(&r.subject, "subject", SUBJECT_CHARS, false)?,
        status,
        source: source(r.source)?,
        source_id: text(&r.source_id, "source_id", ID_CHARS, false)?,
        scheduled_send_id,
        at: time(r.occurred_at, "occurred_at")?,
    })
}

pub fn status_change(r: pb::UpdateSendStatusRequest) -> Result<SendStatusChange, ValidationError> {
    Ok(SendStatusChange {
        send_id: parse_prefixed_id(&r.send_id, "snd", "send_id")?,
        status: send_status(r.status, "status")?
            .ok_or_else(|| ValidationError::new("status", "is required"))?,
        at: time(r.occurred_at, "occurred_at")?,
    })
}

pub fn engagement(r: pb::RecordSendEngagementRequest) -> Result<SendEngagement, ValidationError> {
    let engagement = match pb::Engagement::try_from(r.engagement) {
        Ok(pb::Engagement::Opened) => Engagement::Opened,
        Ok(pb::Engagement::Clicked) => Engagement::Clicked,
        Ok(pb::Engagement::Unspecified) => {
            return Err(ValidationError::new("engagement", "is required"));
        }
        Err(_) => {
            return Err(ValidationError::new(
                "engagement",
                "is not a known Engagement",
            ));
        }
    };
    let url = text(&r.url, "url", URL_CHARS, false)?;
    Ok(SendEngagement {
        send_id: parse_prefixed_id(&r.send_id, "snd", "send_id")?,
        engagement,
        url: (!url.is_empty()).then_some(url),
        at: time(r.occurred_at, "occurred_at")?,
    })
}

pub fn new_scheduled_send(r: pb::ScheduleSendRequest) -> Result<NewScheduledSend, ValidationError> {
    if r.step < 0 {
        return Err(ValidationError::new("step", "must not be negative"));
    }
    Ok(NewScheduledSend {
        contact_id: contact_id(&r.contact_id)?,
        template_id: text(&r.template_id, "template_id", ID_CHARS, true)?,
        template_name: text(&r.template_name, "template_name", NAME_CHARS, false)?,
        subject: text(&r.subject, "subject", SUBJECT_CHARS, false)?,
        scheduled_for: required_time(
            r.scheduled_for
                .ok_or_else(|| ValidationError::new("scheduled_for", "is required"))?,
            "scheduled_for",
        )?,
        source: source(r.source)?,
        source_id: text(&r.source_id, "source_id", ID_CHARS, false)?,
        step: r.step,
        at: crate::domain::now(),
    })
}

pub fn scheduled_send_id(raw: &str) -> Result<String, ValidationError> {
    parse_prefixed_id(raw, "sch", "scheduled_send_id")
}

pub fn new_enrolment(r: pb::EnrolContactRequest) -> Result<NewEnrolment, ValidationError> {
    Ok(NewEnrolment {
        contact_id: contact_id(&r.contact_id)?,
        sequence_id: text(&r.sequence_id, "sequence_id", ID_CHARS, true)?,
        sequence_name: text(&r.sequence_name, "sequence_name", NAME_CHARS, false)?,
        at: time(r.occurred_at, "occurred_at")?,
    })
}

pub fn enrolment_change(r: pb::UpdateEnrolmentRequest) -> Result<EnrolmentChange, ValidationError> {
    if r.current_step.is_some_and(|step| step < 0) {
        return Err(ValidationError::new("current_step", "must not be negative"));
    }
    Ok(EnrolmentChange {
        contact_id: contact_id(&r.contact_id)?,
        sequence_id: text(&r.sequence_id, "sequence_id", ID_CHARS, true)?,
        status: enrolment_status(r.status)?,
        current_step: r.current_step,
        at: time(r.occurred_at, "occurred_at")?,
    })
}

pub fn membership_change(
    r: pb::SetSegmentMembershipRequest,
) -> Result<MembershipChange, ValidationError> {
    Ok(MembershipChange {
        contact_id: contact_id(&r.contact_id)?,
        segment_id: text(&r.segment_id, "segment_id", ID_CHARS, true)?,
        segment_name: text(&r.segment_name, "segment_name", NAME_CHARS, false)?,
        member: r.member,
        at: time(r.occurred_at, "occurred_at")?,
    })
}

pub fn new_event(r: pb::TrackEventRequest) -> Result<NewEvent, ValidationError> {
    let (id, email) = match r.subject {
        Some(pb::track_event_request::Subject::ContactId(id)) => (Some(id), None),
        Some(pb::track_event_request::Subject::Email(email)) => (None, Some(email)),
        None => (None, None),
    };
    let properties = match r.properties {
        Some(properties) => {
            Properties::parse(from_struct(properties, "properties")?, "properties")?
        }
        None => Properties::default(),
    };
    Ok(NewEvent {
        contact: contact_ref(id, email, "subject")?,
        name: text(&r.name, "name", NAME_CHARS, true)?,
        properties,
        at: time(r.occurred_at, "occurred_at")?,
    })
}
