use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::ValidationError;

/// One entry of a contact's activity feed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TimelineEntry {
    pub id: String,
    pub kind: String,
    pub timestamp: DateTime<Utc>,
    pub data: Map<String, Value>,
}

impl TimelineEntry {
    /// A new entry with a fresh `tle_` id.
    pub fn new(kind: &str, timestamp: DateTime<Utc>, data: Map<String, Value>) -> Self {
        Self {
            id: super::new_id("tle"),
            kind: kind.to_owned(),
            timestamp,
            data,
        }
    }
}

/// Order of a timeline listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimelineOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// Filters of ListContactTimeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimelineQuery {
    pub order: TimelineOrder,
    /// Empty means every type.
    pub types: Vec<String>,
}

/// Keyset position in a list ordered by `(timestamp, id)`: timelines and scheduled sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeKey {
    pub timestamp_micros: i64,
    pub id: String,
}

impl TimeKey {
    /// The key's timestamp; out-of-range values come only from forged cursors.
    pub fn time(&self) -> Result<DateTime<Utc>, ValidationError> {
        DateTime::from_timestamp_micros(self.timestamp_micros).ok_or_else(|| {
            ValidationError::new("cursor", "is not a cursor returned by this service")
        })
    }

    pub fn encode(&self) -> String {
        format!("{}|{}", self.timestamp_micros, self.id)
    }

    /// A key as `encode` wrote it, its time within the years 1 to 9999 (the range
    /// of every time the service accepts and both stores keep), so no store is ever
    /// asked for a time it cannot represent.
    pub fn decode(raw: &str) -> Result<Self, ValidationError> {
        const FIRST: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
        const LAST: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
        let invalid = || ValidationError::new("cursor", "is not a cursor returned by this service");
        let (micros, id) = raw.split_once('|').ok_or_else(invalid)?;
        let timestamp_micros: i64 = micros.parse().map_err(|_| invalid())?;
        if !(FIRST..=LAST).contains(&timestamp_micros) {
            return Err(invalid());
        }
        Ok(Self {
            timestamp_micros,
            id: id.to_owned(),
        })
    }
}

impl TimelineQuery {
    pub const MAX_TYPES: usize = 32;

    pub fn new(order: TimelineOrder, types: Vec<String>) -> Result<Self, ValidationError> {
        if types.len() > Self::MAX_TYPES {
            return Err(ValidationError::new(
                "types",
                format!("must list at most {} types", Self::MAX_TYPES),
            ));
        }
        for kind in &types {
            let ok = !kind.is_empty()
                && kind.len() <= 64
                && kind
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return Err(ValidationError::new(
                    "types",
                    "each type must be 1-64 characters of a-z, 0-9, `.`, `_` and `-`",
                ));
            }
        }
        let mut types = types;
        types.sort();
        types.dedup();
        Ok(Self { order, types })
    }

    pub fn fingerprint_parts(&self, contact_id: &str) -> Vec<String> {
        let order = match self.order {
            TimelineOrder::NewestFirst => "newest",
            TimelineOrder::OldestFirst => "oldest",
        };
        let mut parts = vec![contact_id.to_owned(), order.to_owned()];
        parts.extend(self.types.iter().cloned());
        parts
    }
}

/// Entry types this service writes itself.
pub mod types {
    pub const CONTACT_CREATED: &str = "contact.created";
    pub const CONTACT_UPDATED: &str = "contact.updated";
}

/// The `contact.created` entry: the email and initial properties.
pub fn contact_created(contact: &super::Contact) -> TimelineEntry {
    let mut data = Map::new();
    data.insert(
        "email".into(),
        Value::String(contact.email.as_str().to_owned()),
    );
    data.insert(
        "properties".into(),
        Value::Object(contact.properties.as_map().clone()),
    );
    TimelineEntry {
        id: super::new_id("tle"),
        kind: types::CONTACT_CREATED.to_owned(),
        timestamp: contact.created_at,
        data,
    }
}

/// The `contact.updated` entry: each changed field with its value before and after
/// (`null` where a property did not exist). `None` when nothing changed.
pub fn contact_updated(
    before: &super::Contact,
    after: &super::Contact,
    property_changes: &[(String, Option<Value>, Option<Value>)],
) -> Option<TimelineEntry> {
    let mut data = Map::new();
    if before.email.as_str() != after.email.as_str() {
        data.insert(
            "email".into(),
            change(before.email.as_str().into(), after.email.as_str().into()),
        );
    }
    if !property_changes.is_empty() {
        let mut props = Map::new();
        for (key, old, new) in property_changes {
            let old = old.clone().unwrap_or(Value::Null);
            let new = new.clone().unwrap_or(Value::Null);
            props.insert(key.clone(), change(old, new));
        }
        data.insert("properties".into(), Value::Object(props));
    }
    if data.is_empty() {
        return None;
    }
    Some(TimelineEntry {
        id: super::new_id("tle"),
        kind: types::CONTACT_UPDATED.to_owned(),
        timestamp: after.updated_at,
        data,
    })
}

fn change(before: Value, after: Value) -> Value {
    let mut map = Map::new();
    map.insert("before".into(), before);
    map.insert("after".into(), after);
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_key_outside_the_years_1_to_9999_is_refused() {
        let cases = [
            ("-62135596800000000|x", true, "0001-01-01"),
            ("253402300799999999|x", true, "9999-12-31, last microsecond"),
            ("-62135596800000001|x", false, "before the year 1"),
            (
                "-210866803200000000|x",
                false,
                "4713 BC, past PostgreSQL's range",
            ),
            ("253402300800000000|x", false, "the year 10000"),
            ("9223372036854775807|x", false, "i64::MAX"),
        ];
        for (raw, ok, case) in cases {
            assert_eq!(TimeKey::decode(raw).is_ok(), ok, "{case}");
        }
    }
}
