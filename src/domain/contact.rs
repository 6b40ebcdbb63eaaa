use chrono::{DateTime, Utc};

use super::{
    ContactId, Email, Properties, PropertiesJson, PropertiesPatch, TimelineEntry, ValidationError,
    contact_updated,
};

/// A stored contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: ContactId,
    pub email: Email,
    pub properties: Properties,
    pub suppressed: bool,
    pub unsubscribed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Advanced by every write of the row (the store's `revision` column); the etag.
    pub revision: i64,
}

impl Contact {
    /// A new contact with a fresh id, created (and last updated) at `at`; the id is
    /// never earlier than `at` (`ContactId::generate_not_before`).
    pub fn new(email: Email, properties: Properties, at: DateTime<Utc>) -> Self {
        Self::with_id(ContactId::generate_not_before(at), email, properties, at)
    }

    /// A new contact with `id`, which must not be earlier than `at` (the id-floor
    /// rule, migrations/postgres/0009): an id made by `ContactId::generate_*` for
    /// `at` or an earlier time.
    pub fn with_id(id: ContactId, email: Email, properties: Properties, at: DateTime<Utc>) -> Self {
        Self {
            id,
            email,
            properties,
            suppressed: false,
            unsubscribed: false,
            created_at: at,
            updated_at: at,
            revision: 1,
        }
    }

    /// The contact after `update`, with the `contact.updated` entry that records it;
    /// `None` when the update changes nothing (nothing is written then).
    pub fn apply(
        &self,
        update: ContactUpdate,
    ) -> Result<Option<(Contact, TimelineEntry)>, ValidationError> {
        let mut after = self.clone();
        let mut property_changes = Vec::new();
        if let Some(email) = update.email {
            after.email = email;
        }
        if let Some(patch) = &update.properties {
            let (merged, changes) = self.properties.merge(patch, "properties")?;
            after.properties = merged;
            property_changes = changes;
        }
        after.updated_at = super::now().max(self.updated_at);
        after.revision = self.revision + 1;
        Ok(contact_updated(self, &after, &property_changes).map(|entry| (after, entry)))
    }
}

/// A contact as a read returns it, its properties still the stored JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactView {
    pub id: ContactId,
    pub email: Email,
    pub properties: PropertiesJson,
    pub suppressed: bool,
    pub unsubscribed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub revision: i64,
}

/// A contact read by a list, borrowed from the row the store read it from: a list
/// hands each row to the caller's encoding before (or instead of) owning its text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContactRow<'a> {
    pub id: &'a str,
    pub email: &'a str,
    /// The stored JSON text of the properties.
    pub properties: &'a str,
    pub suppressed: bool,
    pub unsubscribed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub revision: i64,
}

impl ContactRow<'_> {
    /// The contact, owned.
    pub fn to_view(&self) -> ContactView {
        ContactView {
            id: ContactId::from_trusted(self.id.to_owned()),
            email: Email::from_trusted(self.email.to_owned()),
            properties: PropertiesJson::from_trusted(self.properties.to_owned()),
            suppressed: self.suppressed,
            unsubscribed: self.unsubscribed,
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision,
        }
    }
}

impl ContactView {
    /// The contact, borrowed.
    pub fn borrowed(&self) -> ContactRow<'_> {
        ContactRow {
            id: self.id.as_str(),
            email: self.email.as_str(),
            properties: self.properties.as_str(),
            suppressed: self.suppressed,
            unsubscribed: self.unsubscribed,
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision,
        }
    }

    /// The contact with its properties parsed, for a change that merges them.
    pub fn parse(self) -> Result<Contact, serde_json::Error> {
        Ok(Contact {
            properties: Properties::from_trusted(serde_json::from_str(self.properties.as_str())?),
            id: self.id,
            email: self.email,
            suppressed: self.suppressed,
            unsubscribed: self.unsubscribed,
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision,
        })
    }
}

/// A validated CreateContact.
#[derive(Debug, Clone)]
pub struct NewContact {
    pub email: Email,
    pub properties: Properties,
}

/// A validated UpdateContact: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ContactUpdate {
    pub email: Option<Email>,
    pub properties: Option<PropertiesPatch>,
}

/// A validated UpsertContact (or import row): the contact with `email` gets
/// `properties` merged in, or is created with them.
#[derive(Debug, Clone)]
pub struct ContactUpsert {
    pub email: Email,
    pub properties: PropertiesPatch,
}

impl ContactUpsert {
    /// The contact to create when the address is new: the patch applied to no
    /// properties (a null removes nothing, so it is simply left out).
    pub fn new_contact(&self, at: DateTime<Utc>) -> Result<Contact, ValidationError> {
        self.new_contact_with_id(ContactId::generate_not_before(at), at)
    }

    /// `new_contact` with an id made beforehand (see `Contact::with_id`).
    pub fn new_contact_with_id(
        &self,
        id: ContactId,
        at: DateTime<Utc>,
    ) -> Result<Contact, ValidationError> {
        let (properties, _) = Properties::default().merge(&self.properties, "properties")?;
        Ok(Contact::with_id(id, self.email.clone(), properties, at))
    }

    /// The update to apply when the address exists: the properties only (the stored
    /// spelling of the address stays).
    pub fn into_update(self) -> ContactUpdate {
        ContactUpdate {
            email: None,
            properties: Some(self.properties),
        }
    }
}

/// Filters of ListContacts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactQuery {
    pub search: Option<SearchTerm>,
    pub suppressed: Option<bool>,
    /// ANDed with `search` and `suppressed`.
    pub filter: Option<super::ContactFilter>,
    pub order: super::ContactOrder,
}

impl ContactQuery {
    /// The parts a cursor is bound to. A filter and an order add parts only when
    /// present, so cursors issued before they existed still resume.
    pub fn fingerprint_parts(&self) -> Vec<String> {
        let search = self.search.as_ref().map_or("", SearchTerm::as_str);
        let suppressed = match self.suppressed {
            None => "",
            Some(true) => "1",
            Some(false) => "0",
        };
        let mut parts = vec![search.to_owned(), suppressed.to_owned()];
        let order = self.order.fingerprint();
        if self.filter.is_some() || !order.is_empty() {
            parts.push(
                self.filter
                    .as_ref()
                    .map(|f| f.fingerprint())
                    .unwrap_or_default(),
            );
            parts.push(order.to_owned());
        }
        parts
    }
}

/// A search term, lowercased. Matched as a literal substring: `%`, `_` and `\` carry
/// no special meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerm(String);

impl SearchTerm {
    pub const MAX_CHARS: usize = 256;

    /// `None` for an empty term (no filter).
    pub fn parse(raw: &str) -> Result<Option<Self>, ValidationError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "search",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        // Control characters separate values in the indexed text; none can match.
        if raw.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "search",
                "must not contain control characters",
            ));
        }
        Ok(Some(Self(raw.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The term as a LIKE pattern with `\` as the escape character.
    pub fn like_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.0.len() + 2);
        pattern.push('%');
        for c in self.0.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_are_lowercased_and_wildcards_escaped() {
        let term = SearchTerm::parse("50%_Off\\")
            .expect("valid")
            .expect("not empty");
        assert_eq!(term.as_str(), "50%_off\\");
        assert_eq!(term.like_pattern(), "%50\\%\\_off\\\\%");
        assert_eq!(SearchTerm::parse(""), Ok(None));
        assert!(SearchTerm::parse("a\nb").is_err());
        assert!(SearchTerm::parse(&"x".repeat(257)).is_err());
    }
}
