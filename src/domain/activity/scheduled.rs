//! Scheduled sends: emails planned for later, until they go out or are cancelled.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::SendSource;
use crate::domain::rules::object;
use crate::domain::{ContactId, RuleError, TimelineEntry, new_id};

string_enum!(ScheduledStatus {
    Pending = "pending",
    Sent = "sent",
    Cancelled = "cancelled",
});

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
