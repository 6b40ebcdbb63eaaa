//! Records other services write about a contact: sends, scheduled sends, sequence
//! enrolments, segment memberships and events; their lifecycle rules and the timeline
//! entries each change leaves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::rules::object;
use super::{ContactId, Email, Properties, RuleError, TimelineEntry, new_id};

/// Who an ingestion call is about: an existing contact, or an address that is
/// created as a contact when the tenant has none.
#[derive(Debug, Clone)]
pub enum ContactRef {
    Id(ContactId),
    Email(Email),
}

/// AIP-155 request id: a retry with the same id returns the first result and
/// writes nothing again; `fingerprint` tells a retry from a different request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub request_id: String,
    pub method: &'static str,
    pub fingerprint: [u8; 32],
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name { $($variant),* }

        impl $name {
            /// The spelling stored in the database and shown in timeline data.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }

            /// Parses a stored spelling.
            pub fn from_db(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

string_enum!(SendStatus {
    Queued = "queued",
    Sent = "sent",
    Delivered = "delivered",
    Bounced = "bounced",
    Complained = "complained",
    Rejected = "rejected",
});

string_enum!(SendSource {
    Transactional = "transactional",
    Sequence = "sequence",
    Campaign = "campaign",
});

string_enum!(ScheduledStatus {
    Pending = "pending",
    Sent = "sent",
    Cancelled = "cancelled",
});

string_enum!(EnrolmentStatus {
    Active = "active",
    Paused = "paused",
    Completed = "completed",
    Exited = "exited",
});

string_enum!(Engagement {
    Opened = "opened",
    Clicked = "clicked",
});

/// One email sent (or being sent) to a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRecord {
    pub id: String,
    pub contact_id: ContactId,
    pub email: String,
    pub template_id: String,
    pub template_name: String,
    pub subject: String,
    pub status: SendStatus,
    pub source: SendSource,
    pub source_id: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub opened_at: Option<DateTime<Utc>>,
    pub clicked_at: Option<DateTime<Utc>>,
    pub bounced_at: Option<DateTime<Utc>>,
    pub complained_at: Option<DateTime<Utc>>,
}

/// A validated RecordSend.
#[derive(Debug, Clone)]
pub struct NewSend {
    pub contact: ContactRef,
    pub template_id: String,
    pub template_name: String,
    pub subject: String,
    /// `Queued` or `Sent`.
    pub status: SendStatus,
    pub source: SendSource,
    pub source_id: String,
    /// The scheduled send this send fulfils; it is marked sent.
    pub scheduled_send_id: Option<String>,
    pub at: DateTime<Utc>,
}

impl NewSend {
    /// The send for `contact_id` at `email`, and its `email.queued`/`email.sent` entry.
    pub fn into_send(self, contact_id: ContactId, email: String) -> (SendRecord, TimelineEntry) {
        let send = SendRecord {
            id: new_id("snd"),
            contact_id,
            email,
            template_id: self.template_id,
            template_name: self.template_name,
            subject: self.subject,
            status: self.status,
            source: self.source,
            source_id: self.source_id,
            created_at: self.at,
            sent_at: (self.status == SendStatus::Sent).then_some(self.at),
            delivered_at: None,
            opened_at: None,
            clicked_at: None,
            bounced_at: None,
            complained_at: None,
        };
        let entry = send.entry(&format!("email.{}", self.status.as_str()), self.at, None);
        (send, entry)
    }
}

impl SendRecord {
    fn entry(&self, kind: &str, at: DateTime<Utc>, url: Option<&str>) -> TimelineEntry {
        let mut data = object([
            ("send_id", json!(self.id)),
            ("template_id", json!(self.template_id)),
            ("template_name", json!(self.template_name)),
            ("subject", json!(self.subject)),
            ("source", json!(self.source.as_str())),
            ("source_id", json!(self.source_id)),
        ]);
        if let Some(url) = url {
            data.insert("url".into(), json!(url));
        }
        TimelineEntry::new(kind, at, data)
    }

    /// Moves the send to `status`, stamping the matching time. `None` when it is
    /// already there (a duplicate webhook): nothing is written.
    pub fn transition(
        &self,
        status: SendStatus,
        at: DateTime<Utc>,
    ) -> Result<Option<(SendRecord, TimelineEntry)>, RuleError> {
        use SendStatus::*;
        if status == self.status {
            return Ok(None);
        }
        let allowed = matches!(
            (self.status, status),
            (Queued, Sent | Delivered | Rejected | Bounced)
                | (Sent, Delivered | Bounced | Complained)
                | (Delivered, Bounced | Complained)
        );
        if !allowed {
            return Err(RuleError(format!(
                "a send cannot move from `{}` to `{}`",
                self.status.as_str(),
                status.as_str()
            )));
        }
        let mut next = self.clone();
        next.status = status;
        match status {
            Sent => next.sent_at = Some(at),
            Delivered => {
                next.sent_at.get_or_insert(at);
                next.delivered_at = Some(at);
            }
            Bounced => next.bounced_at = Some(at),
            Complained => next.complained_at = Some(at),
            Queued | Rejected => {}
        }
        let entry = next.entry(&format!("email.{}", status.as_str()), at, None);
        Ok(Some((next, entry)))
    }

    /// Records an open or click; the first one stamps `opened_at`/`clicked_at`.
    pub fn engage(
        &self,
        engagement: Engagement,
        at: DateTime<Utc>,
        url: Option<&str>,
    ) -> Result<(SendRecord, TimelineEntry), RuleError> {
        if !matches!(
            self.status,
            SendStatus::Sent | SendStatus::Delivered | SendStatus::Complained
        ) {
            return Err(RuleError(format!(
                "a `{}` send cannot be {}",
                self.status.as_str(),
                engagement.as_str()
            )));
        }
        let mut next = self.clone();
        match engagement {
            Engagement::Opened => {
                next.opened_at.get_or_insert(at);
            }
            Engagement::Clicked => {
                next.clicked_at.get_or_insert(at);
                // A click implies the email was opened, even if no pixel loaded.
                next.opened_at.get_or_insert(at);
            }
        }
        let entry = next.entry(&format!("email.{}", engagement.as_str()), at, url);
        Ok((next, entry))
    }

    /// Bounces and complaints suppress the contact.
    pub fn suppresses(&self) -> bool {
        matches!(self.status, SendStatus::Bounced | SendStatus::Complained)
    }
}

/// The `contact.suppressed` entry written when a send suppresses its contact.
pub fn contact_suppressed(send: &SendRecord, at: DateTime<Utc>) -> TimelineEntry {
    TimelineEntry::new(
        "contact.suppressed",
        at,
        object([
            ("reason", json!(send.status.as_str())),
            ("send_id", json!(send.id)),
        ]),
    )
}

/// The `contact.unsubscribed` entry written for an `email.unsubscribed` event.
pub fn contact_unsubscribed(event_id: &str, at: DateTime<Utc>) -> TimelineEntry {
    TimelineEntry::new(
        "contact.unsubscribed",
        at,
        object([("event_id", json!(event_id))]),
    )
}

/// An email planned for later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledSend {
    pub id: String,
    pub contact_id: ContactId,
    pub email: String,
    pub template_id: String,
    pub template_name: String,
    pub subject: String,
    pub scheduled_for: DateTime<Utc>,
    pub source: SendSource,
    pub source_id: String,
    pub step: i32,
    pub status: ScheduledStatus,
    pub created_at: DateTime<Utc>,
}

/// A validated ScheduleSend.
#[derive(Debug, Clone)]
pub struct NewScheduledSend {
    pub contact_id: ContactId,
    pub template_id: String,
    pub template_name: String,
    pub subject: String,
    pub scheduled_for: DateTime<Utc>,
    pub source: SendSource,
    pub source_id: String,
    pub step: i32,
    pub at: DateTime<Utc>,
}

impl NewScheduledSend {
    pub fn into_scheduled(self, email: String) -> (ScheduledSend, TimelineEntry) {
        let scheduled = ScheduledSend {
            id: new_id("sch"),
            contact_id: self.contact_id,
            email,
            template_id: self.template_id,
            template_name: self.template_name,
            subject: self.subject,
            scheduled_for: self.scheduled_for,
            source: self.source,
            source_id: self.source_id,
            step: self.step,
            status: ScheduledStatus::Pending,
            created_at: self.at,
        };
        let entry = scheduled.entry("send.scheduled", self.at);
        (scheduled, entry)
    }
}

impl ScheduledSend {
    fn entry(&self, kind: &str, at: DateTime<Utc>) -> TimelineEntry {
        TimelineEntry::new(
            kind,
            at,
            object([
                ("scheduled_send_id", json!(self.id)),
                ("template_id", json!(self.template_id)),
                ("template_name", json!(self.template_name)),
                ("subject", json!(self.subject)),
                ("scheduled_for", json!(self.scheduled_for.to_rfc3339())),
                ("source", json!(self.source.as_str())),
                ("source_id", json!(self.source_id)),
                ("step", json!(self.step)),
            ]),
        )
    }

    fn require_pending(&self, action: &str) -> Result<(), RuleError> {
        if self.status != ScheduledStatus::Pending {
            return Err(RuleError(format!(
                "scheduled send `{}` is `{}` and cannot be {action}",
                self.id,
                self.status.as_str()
            )));
        }
        Ok(())
    }

    pub fn cancel(&self, at: DateTime<Utc>) -> Result<(ScheduledSend, TimelineEntry), RuleError> {
        self.require_pending("cancelled")?;
        let mut next = self.clone();
        next.status = ScheduledStatus::Cancelled;
        let entry = next.entry("send.cancelled", at);
        Ok((next, entry))
    }

    /// Marks the scheduled send sent by `send`; the send's own entry records it.
    pub fn fulfil(&self, contact_id: &ContactId) -> Result<ScheduledSend, RuleError> {
        if &self.contact_id != contact_id {
            return Err(RuleError(format!(
                "scheduled send `{}` belongs to another contact",
                self.id
            )));
        }
        self.require_pending("sent")?;
        let mut next = self.clone();
        next.status = ScheduledStatus::Sent;
        Ok(next)
    }
}

/// A contact's enrolment in a sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolment {
    pub contact_id: ContactId,
    pub sequence_id: String,
    pub sequence_name: String,
    pub status: EnrolmentStatus,
    pub current_step: i32,
    pub enrolled_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub exited_at: Option<DateTime<Utc>>,
}

impl Enrolment {
    fn finished(&self) -> bool {
        matches!(
            self.status,
            EnrolmentStatus::Completed | EnrolmentStatus::Exited
        )
    }

    /// Enrols, or re-enrols after a finished enrolment; an active or paused one is
    /// left alone (FAILED_PRECONDITION).
    pub fn enrol(
        existing: Option<&Enrolment>,
        contact_id: ContactId,
        sequence_id: String,
        sequence_name: String,
        at: DateTime<Utc>,
    ) -> Result<(Enrolment, TimelineEntry), RuleError> {
        if let Some(existing) = existing.filter(|e| !e.finished()) {
            return Err(RuleError(format!(
                "the contact is already enrolled in sequence `{}` ({})",
                existing.sequence_id,
                existing.status.as_str()
            )));
        }
        let enrolment = Enrolment {
            contact_id,
            sequence_id,
            sequence_name,
            status: EnrolmentStatus::Active,
            current_step: 0,
            enrolled_at: at,
            updated_at: at,
            completed_at: None,
            exited_at: None,
        };
        let entry = TimelineEntry::new(
            "sequence.enrolled",
            at,
            object([
                ("sequence_id", json!(enrolment.sequence_id)),
                ("sequence_name", json!(enrolment.sequence_name)),
            ]),
        );
        Ok((enrolment, entry))
    }

    /// Changes status and/or step. Completing or exiting stamps the time and writes
    /// `sequence.completed`/`sequence.exited`; other changes write `sequence.updated`.
    /// `None` when nothing changes.
    pub fn update(
        &self,
        status: Option<EnrolmentStatus>,
        current_step: Option<i32>,
        at: DateTime<Utc>,
    ) -> Result<Option<(Enrolment, TimelineEntry)>, RuleError> {
        if self.finished() {
            return Err(RuleError(format!(
                "the enrolment in sequence `{}` is `{}` and cannot change",
                self.sequence_id,
                self.status.as_str()
            )));
        }
        let mut next = self.clone();
        if let Some(status) = status {
            next.status = status;
        }
        if let Some(step) = current_step {
            next.current_step = step;
        }
        if next.status == self.status && next.current_step == self.current_step {
            return Ok(None);
        }
        next.updated_at = at;
        let kind = match next.status {
            EnrolmentStatus::Completed => {
                next.completed_at = Some(at);
                "sequence.completed"
            }
            EnrolmentStatus::Exited => {
                next.exited_at = Some(at);
                "sequence.exited"
            }
            EnrolmentStatus::Active | EnrolmentStatus::Paused => "sequence.updated",
        };
        let change = |before: Value, after: Value| json!({"before": before, "after": after});
        let mut data = object([
            ("sequence_id", json!(next.sequence_id)),
            ("sequence_name", json!(next.sequence_name)),
        ]);
        if next.status != self.status {
            data.insert(
                "status".into(),
                change(json!(self.status.as_str()), json!(next.status.as_str())),
            );
        }
        if next.current_step != self.current_step {
            data.insert(
                "current_step".into(),
                change(json!(self.current_step), json!(next.current_step)),
            );
        }
        Ok(Some((next.clone(), TimelineEntry::new(kind, at, data))))
    }
}

/// A contact's membership of a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub contact_id: ContactId,
    pub segment_id: String,
    pub segment_name: String,
    pub joined_at: DateTime<Utc>,
}

/// Result of SetSegmentMembership: the membership after the call (`None` when the
/// contact is not a member) and whether anything changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipOutcome {
    pub membership: Option<Membership>,
    pub changed: bool,
}

pub fn segment_entry(
    kind: &str,
    segment_id: &str,
    segment_name: &str,
    at: DateTime<Utc>,
) -> TimelineEntry {
    TimelineEntry::new(
        kind,
        at,
        object([
            ("segment_id", json!(segment_id)),
            ("segment_name", json!(segment_name)),
        ]),
    )
}

/// A validated TrackEvent.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub contact: ContactRef,
    pub name: String,
    pub properties: Properties,
    pub at: DateTime<Utc>,
}

/// The event that marks a contact unsubscribed.
pub const UNSUBSCRIBE_EVENT: &str = "email.unsubscribed";

impl NewEvent {
    /// The `event` entry: its id, name and properties.
    pub fn entry(&self) -> TimelineEntry {
        let event_id = new_id("evt");
        TimelineEntry::new(
            "event",
            self.at,
            object([
                ("event_id", json!(event_id)),
                ("name", json!(self.name)),
                (
                    "properties",
                    Value::Object(self.properties.as_map().clone()),
                ),
            ]),
        )
    }
}

/// Result of TrackEvent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedEvent {
    pub contact_id: ContactId,
    pub entry: TimelineEntry,
}

/// A validated UpdateSendStatus.
#[derive(Debug, Clone)]
pub struct SendStatusChange {
    pub send_id: String,
    pub status: SendStatus,
    pub at: DateTime<Utc>,
}

/// A validated RecordSendEngagement.
#[derive(Debug, Clone)]
pub struct SendEngagement {
    pub send_id: String,
    pub engagement: Engagement,
    pub url: Option<String>,
    pub at: DateTime<Utc>,
}

/// A validated EnrolContact.
#[derive(Debug, Clone)]
pub struct NewEnrolment {
    pub contact_id: ContactId,
    pub sequence_id: String,
    pub sequence_name: String,
    pub at: DateTime<Utc>,
}

/// A validated UpdateEnrolment.
#[derive(Debug, Clone)]
pub struct EnrolmentChange {
    pub contact_id: ContactId,
    pub sequence_id: String,
    pub status: Option<EnrolmentStatus>,
    pub current_step: Option<i32>,
    pub at: DateTime<Utc>,
}

/// A validated SetSegmentMembership.
#[derive(Debug, Clone)]
pub struct MembershipChange {
    pub contact_id: ContactId,
    pub segment_id: String,
    pub segment_name: String,
    pub member: bool,
    pub at: DateTime<Utc>,
}
