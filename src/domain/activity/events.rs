//! Tracked events: named occurrences with properties, and the unsubscribe event that
//! marks a contact unsubscribed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ContactRef;
use crate::domain::rules::object;
use crate::domain::{ContactId, Properties, TimelineEntry, new_id};

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

/// The `contact.unsubscribed` entry written for an `email.unsubscribed` event.
pub fn contact_unsubscribed(event_id: &str, at: DateTime<Utc>) -> TimelineEntry {
    TimelineEntry::new(
        "contact.unsubscribed",
        at,
        object([("event_id", json!(event_id))]),
    )
}
