//! Sends: an email's delivery lifecycle, its opens and clicks, and the suppression
//! that bounces and complaints cause.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ContactRef;
use crate::domain::rules::object;
use crate::domain::{ContactId, RuleError, TimelineEntry, new_id};

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
