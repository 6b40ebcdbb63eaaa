//! Etags (AIP-154): a contact's version as callers see it. Opaque to them; here it
//! is the row's revision, which every write of the contact advances.

use super::ValidationError;

/// A contact version a caller made its write conditional on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Etag(i64);

const PREFIX: &str = "r";

impl Etag {
    /// The etag of a contact at `revision`.
    pub fn of(revision: i64) -> String {
        format!("{PREFIX}{revision}")
    }

    /// `None` for an empty etag (an unconditional write). Text this service never
    /// returned is invalid rather than a mismatch: it could never match.
    pub fn parse(raw: &str, field: &str) -> Result<Option<Self>, ValidationError> {
        if raw.is_empty() {
            return Ok(None);
        }
        raw.strip_prefix(PREFIX)
            .filter(|digits| digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<i64>().ok())
            .filter(|revision| *revision > 0)
            .map(|revision| Some(Self(revision)))
            .ok_or_else(|| ValidationError::new(field, "must be an etag returned by this service"))
    }

    /// Whether a contact at `revision` is the version this etag names.
    pub fn matches(self, revision: i64) -> bool {
        self.0 == revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etag_names_one_revision_and_garbage_is_invalid() {
        let etag = Etag::parse(&Etag::of(7), "etag")
            .expect("valid")
            .expect("set");
        assert!(etag.matches(7));
        assert!(!etag.matches(8));
        assert_eq!(Etag::parse("", "etag"), Ok(None));
        for garbage in [
            "7",
            "r",
            "r-1",
            "r0",
            "r+7",
            "R7",
            "r7 ",
            "r99999999999999999999",
        ] {
            let err = Etag::parse(garbage, "etag").expect_err(garbage);
            assert_eq!(err.field, "etag", "{garbage}");
        }
    }
}
