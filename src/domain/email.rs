use email_address::{EmailAddress, Options};

use super::ValidationError;

/// Longest address we accept (RFC 5321's path limit less the angle brackets).
const MAX_LEN: usize = 254;

/// A syntactically valid email address. `key()` is the case-folded form that
/// uniqueness and lookups use; `as_str()` keeps the caller's spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    address: String,
    /// `None` when the address is its own key, as most are: every contact read builds
    /// an `Email`, and lowercasing each into a second string was an allocation a row.
    key: Option<String>,
}

impl Email {
    /// Trims and validates `raw`; `field` names the request field in the error.
    pub fn parse(raw: &str, field: &str) -> Result<Self, ValidationError> {
        let address = raw.trim();
        if address.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if address.chars().count() > MAX_LEN {
            return Err(ValidationError::new(
                field,
                format!("must be at most {MAX_LEN} characters"),
            ));
        }
        if address.chars().any(|c| c.is_control() || is_invisible(c)) {
            return Err(ValidationError::new(
                field,
                "must not contain control or invisible characters",
            ));
        }
        let options = Options {
            minimum_sub_domains: 2,
            allow_domain_literal: false,
            allow_display_text: false,
            ..Options::default()
        };
        if let Err(err) = EmailAddress::parse_with_options(address, options) {
            return Err(ValidationError::new(
                field,
                format!("is not a valid email address ({err})"),
            ));
        }
        Ok(Self::from_trusted(address.to_owned()))
    }

    /// Rebuilds an address that a store validated when it was written.
    pub fn from_trusted(address: String) -> Self {
        let key = folded(&address);
        Self { address, key }
    }

    /// The key (`key`) of a stored address, without owning the address.
    pub fn key_of(address: &str) -> std::borrow::Cow<'_, str> {
        folded(address).map_or(std::borrow::Cow::Borrowed(address), std::borrow::Cow::Owned)
    }

    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// Case-folded form: `Alice@Example.com` and `alice@example.com` are one contact.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.address)
    }

    pub fn into_string(self) -> String {
        self.address
    }
}

/// The case-folded form of `address`, when it differs from it.
fn folded(address: &str) -> Option<String> {
    if address.is_ascii() {
        address
            .bytes()
            .any(|b| b.is_ascii_uppercase())
            .then(|| address.to_ascii_lowercase())
    } else {
        Some(address.to_lowercase()).filter(|key| *key != address)
    }
}

/// Invisible format characters (zero-width, bidi controls, BOM, tags): in an address
/// they only serve to make two contacts that look the same, or one that reads backwards.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_trims_valid_addresses() {
        for raw in [
            "alice@example.com",
            "  Alice.Smith+tag@Example.co.uk ",
            "o'neil@example.org",
            "用户@例子.广告",
        ] {
            let email = Email::parse(raw, "email").unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(email.as_str(), raw.trim(), "{raw}");
            assert_eq!(email.key(), raw.trim().to_lowercase(), "{raw}");
        }
    }

    /// An address read back keys as a parsed one does, whether or not it is already
    /// its own key, and equal addresses are equal `Email`s either way.
    #[test]
    fn trusted_addresses_key_as_parsed_ones() {
        for address in [
            "alice@example.com",
            "Alice@Example.com",
            "ünïcode@例子.广告",
            "ÜNÏCODE@EXAMPLE.COM",
            "ΣΊΣΥΦΟΣ@example.com",
        ] {
            let trusted = Email::from_trusted(address.to_owned());
            assert_eq!(trusted.key(), address.to_lowercase(), "{address}");
            assert_eq!(trusted.as_str(), address, "{address}");
            assert_eq!(Email::parse(address, "email").as_ref(), Ok(&trusted));
        }
    }

    #[test]
    fn rejects_invalid_addresses_naming_the_field() {
        let long = format!("{}@example.com", "a".repeat(250));
        for (raw, why) in [
            ("", "empty"),
            ("   ", "blank"),
            ("alice", "no at sign"),
            ("alice@", "no domain"),
            ("@example.com", "no local part"),
            ("alice@localhost", "single-label domain"),
            ("alice@[127.0.0.1]", "domain literal"),
            ("Alice <alice@example.com>", "display text"),
            ("al ice@example.com", "space"),
            ("alice@exa\0mple.com", "nul"),
            ("alice\n@example.com", "newline"),
            ("ali\u{200b}ce@example.com", "zero-width space"),
            ("alice@exam\u{202e}ple.com", "right-to-left override"),
            ("\u{feff}alice@example.com", "byte-order mark"),
            (long.as_str(), "too long"),
        ] {
            let err = Email::parse(raw, "email").expect_err(why);
            assert_eq!(err.field, "email", "{why}");
        }
    }
}

/// Fuzzing of email parsing (issue 7): never a panic, and what is accepted keeps the
/// documented rules.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn check(raw: &str) {
        let Ok(email) = Email::parse(raw, "email") else {
            return;
        };
        let address = email.as_str();
        assert_eq!(address, raw.trim(), "{raw:?}");
        assert!(address.chars().count() <= MAX_LEN, "{raw:?}");
        assert!(address.contains('@'), "{raw:?}");
        assert!(
            !address.chars().any(|c| c.is_control() || is_invisible(c)),
            "{raw:?}"
        );
        assert_eq!(email.key(), address.to_lowercase());
        assert_eq!(
            Email::parse(address, "email").as_ref(),
            Ok(&email),
            "idempotent"
        );
    }

    #[test]
    fn the_corpus_keeps_the_rules() {
        for raw in include_str!("../../tests/corpus/emails.txt").lines() {
            check(raw);
        }
    }

    proptest! {
        #[test]
        fn any_string_is_parsed_or_refused(raw in ".{0,300}") {
            check(&raw);
        }

        #[test]
        fn address_like_strings_keep_the_rules(
            local in "[a-zA-Z0-9.+_'%\u{e9}\u{200b}\u{202e}\"\\\\ -]{0,70}",
            domain in "[a-zA-Z0-9.\u{fc}\u{4f8b}-]{0,70}",
        ) {
            check(&format!("{local}@{domain}"));
        }
    }
}
