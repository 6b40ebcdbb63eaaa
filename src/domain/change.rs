//! The change feed (WatchContacts): what kind of change a write of a contact is,
//! which of its fields it changed, and the position of a change in the feed. The
//! store writes one `ContactChange` with every write of a contact, in the same
//! transaction (`store::WriteTx`), from these constructors; no I/O here.

use chrono::{DateTime, Utc};

use super::{Contact, ContactId, ContactView, TimelineEntry, ValidationError};

/// What happened to a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
    Suppressed,
    Unsubscribed,
}

impl ChangeKind {
    pub const ALL: [Self; 5] = [
        Self::Created,
        Self::Updated,
        Self::Deleted,
        Self::Suppressed,
        Self::Unsubscribed,
    ];

    /// As stored in `contact_changes.type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Updated => "UPDATED",
            Self::Deleted => "DELETED",
            Self::Suppressed => "SUPPRESSED",
            Self::Unsubscribed => "UNSUBSCRIBED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// A change as a write records it: the contact after it (none for a deletion) and
/// the names of the fields it changed (`email`, `properties.<key>`, `suppressed`,
/// `unsubscribed`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContactChange {
    pub kind: ChangeKind,
    pub contact_id: ContactId,
    pub contact: Option<Contact>,
    pub changed_fields: Vec<String>,
    pub occurred_at: DateTime<Utc>,
}

impl ContactChange {
    /// A new contact: every field it was created with changed.
    pub fn created(contact: &Contact) -> Self {
        let mut fields = vec!["email".to_owned()];
        fields.extend(
            contact
                .properties
                .as_map()
                .keys()
                .map(|key| format!("properties.{key}")),
        );
        Self {
            kind: ChangeKind::Created,
            contact_id: contact.id.clone(),
            contact: Some(contact.clone()),
            changed_fields: fields,
            occurred_at: contact.created_at,
        }
    }

    /// A contact written anew: the fields that differ between `before` and `after`.
    pub fn updated(before: &Contact, after: &Contact) -> Self {
        let mut fields = Vec::new();
        if before.email.as_str() != after.email.as_str() {
            fields.push("email".to_owned());
        }
        let (old, new) = (before.properties.as_map(), after.properties.as_map());
        for (key, value) in new {
            if old.get(key) != Some(value) {
                fields.push(format!("properties.{key}"));
            }
        }
        for key in old.keys().filter(|key| !new.contains_key(*key)) {
            fields.push(format!("properties.{key}"));
        }
        for (name, was, is) in [
            ("suppressed", before.suppressed, after.suppressed),
            ("unsubscribed", before.unsubscribed, after.unsubscribed),
        ] {
            if was != is {
                fields.push(name.to_owned());
            }
        }
        Self::update(after, fields)
    }

    /// A merge recorded by its `contact.updated` entry: the fields the entry records
    /// (the one-statement writes, which do not read the row again, use this).
    pub fn updated_as_recorded(after: &Contact, entry: &TimelineEntry) -> Self {
        Self::update(after, changed_fields(entry))
    }

    fn update(after: &Contact, changed_fields: Vec<String>) -> Self {
        Self {
            kind: ChangeKind::Updated,
            contact_id: after.id.clone(),
            contact: Some(after.clone()),
            changed_fields,
            occurred_at: after.updated_at,
        }
    }

    /// A flag set by ingestion (`suppressed` or `unsubscribed`), the contact after it.
    pub fn flagged(kind: ChangeKind, after: Contact) -> Self {
        let field = match kind {
            ChangeKind::Unsubscribed => "unsubscribed",
            _ => "suppressed",
        };
        Self {
            kind,
            contact_id: after.id.clone(),
            occurred_at: after.updated_at,
            contact: Some(after),
            changed_fields: vec![field.to_owned()],
        }
    }

    /// An erasure: only the id remains, in this change and in every earlier one.
    pub fn deleted(id: &ContactId, at: DateTime<Utc>) -> Self {
        Self {
            kind: ChangeKind::Deleted,
            contact_id: id.clone(),
            contact: None,
            changed_fields: Vec::new(),
            occurred_at: at,
        }
    }
}

/// The fields a `contact.updated` entry records: `email` and `properties.<key>`.
pub fn changed_fields(entry: &TimelineEntry) -> Vec<String> {
    let mut fields = Vec::new();
    if entry.data.contains_key("email") {
        fields.push("email".to_owned());
    }
    if let Some(serde_json::Value::Object(props)) = entry.data.get("properties") {
        fields.extend(props.keys().map(|key| format!("properties.{key}")));
    }
    fields
}

/// Where a change sits in its tenant's feed: changes are delivered in position
/// order, and a resume token is the position of the last change delivered.
///
/// On PostgreSQL `xid` is the transaction id the change was stamped with and `seq`
/// breaks ties inside a transaction; on SQLite `xid` is 0 and `seq` is the row's
/// position (see `store::common::changes` for why each order is a commit order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChangePosition {
    pub xid: u64,
    pub seq: i64,
}

impl ChangePosition {
    /// Before every change.
    pub const START: Self = Self { xid: 0, seq: 0 };

    /// The keyset key a token carries: `xid.seq`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.xid, self.seq)
    }

    pub fn decode(key: &str) -> Result<Self, ValidationError> {
        let invalid =
            || ValidationError::new("resume_token", "is not a resume token of this service");
        let (xid, seq) = key.split_once('.').ok_or_else(invalid)?;
        Ok(Self {
            xid: xid.parse().map_err(|_| invalid())?,
            seq: seq.parse().map_err(|_| invalid())?,
        })
    }
}

/// One change as the feed delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    pub position: ChangePosition,
    pub kind: ChangeKind,
    pub contact_id: ContactId,
    /// The contact after the change; none for a deletion, nor for an earlier change
    /// of a contact erased since.
    pub contact: Option<ContactView>,
    pub changed_fields: Vec<String>,
    pub occurred_at: DateTime<Utc>,
}

/// Where a watch without a resume token starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// With the changes that commit from now on.
    Now,
    /// With the oldest change still retained.
    OldestRetained,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::{Email, Properties};

    fn contact(props: serde_json::Value) -> Contact {
        let serde_json::Value::Object(map) = props else {
            panic!("an object")
        };
        Contact::new(
            Email::parse("a@example.com", "email").expect("valid"),
            Properties::from_trusted(map),
            crate::domain::now(),
        )
    }

    #[test]
    fn an_update_names_the_fields_that_differ() {
        let before = contact(json!({"a": 1, "b": 2, "c": 3}));
        let mut after = before.clone();
        after.properties = Properties::from_trusted(
            json!({"a": 1, "b": 5, "d": 4})
                .as_object()
                .expect("object")
                .clone(),
        );
        after.email = Email::parse("b@example.com", "email").expect("valid");
        after.suppressed = true;
        let change = ContactChange::updated(&before, &after);
        assert_eq!(change.kind, ChangeKind::Updated);
        assert_eq!(
            change.changed_fields,
            [
                "email",
                "properties.b",
                "properties.d",
                "properties.c",
                "suppressed"
            ]
        );
    }

    #[test]
    fn positions_round_trip_and_order_by_xid_then_seq() {
        let p = ChangePosition { xid: 42, seq: 7 };
        assert_eq!(ChangePosition::decode(&p.encode()), Ok(p));
        assert!(ChangePosition { xid: 41, seq: 99 } < p);
        for bad in ["", "1", "a.b", "1.", ".2", "-1.2"] {
            assert!(ChangePosition::decode(bad).is_err(), "{bad:?}");
        }
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
        }
    }
}
