//! Sequence enrolments: enrol, pause, resume, complete or exit, and re-enrol once
//! finished.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::rules::object;
use crate::domain::{ContactId, RuleError, TimelineEntry};

string_enum!(EnrolmentStatus {
    Active = "active",
    Paused = "paused",
    Completed = "completed",
    Exited = "exited",
});

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
        let entry = self.change_entry(&next, kind, at);
        Ok(Some((next, entry)))
    }

    /// The entry of a change from `self` to `next`: each changed field, before and after.
    fn change_entry(&self, next: &Enrolment, kind: &str, at: DateTime<Utc>) -> TimelineEntry {
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
        TimelineEntry::new(kind, at, data)
    }
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
