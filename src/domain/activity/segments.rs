//! Segment memberships: which segments a contact is in, set by the segmenting service.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::domain::rules::object;
use crate::domain::{ContactId, TimelineEntry};

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

/// A validated SetSegmentMembership.
#[derive(Debug, Clone)]
pub struct MembershipChange {
    pub contact_id: ContactId,
    pub segment_id: String,
    pub segment_name: String,
    pub member: bool,
    pub at: DateTime<Utc>,
}
