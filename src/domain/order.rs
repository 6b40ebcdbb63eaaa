//! The orders of a contact list and their keyset keys: the sort key with the id as
//! tie-breaker, so a page resumes exactly after the last contact it delivered.

use super::{ContactRow, Email, TimeKey, ValidationError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Asc,
    Desc,
}

/// The sort of a contact list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContactOrder {
    /// Id order, which is creation order (the default, and the order before issue 16).
    #[default]
    Id,
    CreatedAt(Direction),
    UpdatedAt(Direction),
    /// By email key (lowercased), in code point order.
    Email(Direction),
}

/// The keyset position after a contact, in one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactKey {
    Id(String),
    Time(TimeKey),
    Email { key: String, id: String },
}

impl ContactKey {
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Email { id, .. } => id,
            Self::Time(time) => &time.id,
        }
    }
}

impl ContactOrder {
    pub fn direction(self) -> Direction {
        match self {
            Self::Id => Direction::Asc,
            Self::CreatedAt(d) | Self::UpdatedAt(d) | Self::Email(d) => d,
        }
    }

    /// The position after `contact`.
    pub fn key_of(self, contact: &ContactRow<'_>) -> ContactKey {
        let id = contact.id.to_owned();
        let time = |at: chrono::DateTime<chrono::Utc>, id| {
            ContactKey::Time(TimeKey {
                timestamp_micros: at.timestamp_micros(),
                id,
            })
        };
        match self {
            Self::Id => ContactKey::Id(id),
            Self::CreatedAt(_) => time(contact.created_at, id),
            Self::UpdatedAt(_) => time(contact.updated_at, id),
            Self::Email(_) => ContactKey::Email {
                key: Email::key_of(contact.email).into_owned(),
                id,
            },
        }
    }

    /// The cursor text of `key`, which `decode_key` reads.
    pub fn encode_key(self, key: &ContactKey) -> String {
        match key {
            ContactKey::Id(id) => id.clone(),
            ContactKey::Time(time) => time.encode(),
            // The id first: it holds no `|`, and an email may.
            ContactKey::Email { key, id } => format!("{id}|{key}"),
        }
    }

    /// A key as `key_of` wrote it (cursors are signed, so only a bug makes one wrong).
    pub fn decode_key(self, raw: &str) -> Result<ContactKey, ValidationError> {
        let invalid = || ValidationError::new("cursor", "is not a cursor returned by this service");
        match self {
            Self::Id => Ok(ContactKey::Id(raw.to_owned())),
            Self::CreatedAt(_) | Self::UpdatedAt(_) => TimeKey::decode(raw).map(ContactKey::Time),
            Self::Email(_) => {
                let (id, key) = raw.split_once('|').ok_or_else(invalid)?;
                Ok(ContactKey::Email {
                    key: key.to_owned(),
                    id: id.to_owned(),
                })
            }
        }
    }

    /// What a cursor of this order is bound to; empty for the default order, so
    /// cursors issued before orders existed still resume.
    pub fn fingerprint(self) -> &'static str {
        match self {
            Self::Id => "",
            Self::CreatedAt(Direction::Asc) => "created_at asc",
            Self::CreatedAt(Direction::Desc) => "created_at desc",
            Self::UpdatedAt(Direction::Asc) => "updated_at asc",
            Self::UpdatedAt(Direction::Desc) => "updated_at desc",
            Self::Email(Direction::Asc) => "email asc",
            Self::Email(Direction::Desc) => "email desc",
        }
    }
}
