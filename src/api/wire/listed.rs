//! A list's contacts, encoded by the store as it reads each row (`store::encoded`):
//! the `Contact` message written straight from the row's borrowed text, its
//! properties transcoded from the stored JSON, with no owned copy of any column and
//! no message built first. A page carries the bytes; encoding it copies them once.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::{Contact, Encoded, close, open, put_str, struct_into};
use crate::domain::ContactRow;
use crate::store::ContactEncoder;

// Field numbers of `kraiter.contacts.v1.Contact` and `google.protobuf.Timestamp`.
const ID: u32 = 1;
const EMAIL: u32 = 2;
const PROPERTIES: u32 = 3;
const SUPPRESSED: u32 = 4;
const UNSUBSCRIBED: u32 = 5;
const CREATED_AT: u32 = 6;
const UPDATED_AT: u32 = 7;
const ETAG: u32 = 8;
const SECONDS: u32 = 1;
const NANOS: u32 = 2;

/// Writes a list's contacts as `kraiter.contacts.v1.Contact`, byte for byte as prost
/// encodes `convert::contact_view`'s message (the tests below hold it to that).
#[derive(Debug, Default)]
pub struct ListedContacts;

impl ContactEncoder for ListedContacts {
    fn encode(&self, contact: &ContactRow<'_>, out: &mut Vec<u8>) -> Result<(), String> {
        // As prost does: a field at its default is left out, and the fields go in
        // their numbers' order; `properties` is present even when empty.
        put_nonempty(out, ID, contact.id);
        put_nonempty(out, EMAIL, contact.email);
        let start = open(out, PROPERTIES);
        struct_into(contact.properties, out).map_err(|err| err.to_string())?;
        close(out, start);
        put_true(out, SUPPRESSED, contact.suppressed);
        put_true(out, UNSUBSCRIBED, contact.unsubscribed);
        put_time(out, CREATED_AT, contact.created_at);
        put_time(out, UPDATED_AT, contact.updated_at);
        // `Etag::of`, without a String.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(contact.revision);
        encode_key(ETAG, WireType::LengthDelimited, out);
        encode_varint(1 + digits.len() as u64, out);
        out.push(b'r');
        out.extend_from_slice(digits.as_bytes());
        Ok(())
    }
}

fn put_nonempty(out: &mut Vec<u8>, field: u32, text: &str) {
    if !text.is_empty() {
        put_str(out, field, text);
    }
}

fn put_true(out: &mut Vec<u8>, field: u32, value: bool) {
    if value {
        encode_key(field, WireType::Varint, out);
        encode_varint(1, out);
    }
}

/// A `Timestamp` as `convert::timestamp` makes it.
fn put_time(out: &mut Vec<u8>, field: u32, at: chrono::DateTime<chrono::Utc>) {
    let seconds = at.timestamp() as u64;
    // An int32 goes on the wire as its sign-extended 64 bits.
    let nanos = i64::from(at.timestamp_subsec_nanos() as i32) as u64;
    let part = |value: u64| {
        if value == 0 {
            0
        } else {
            1 + encoded_len_varint(value)
        }
    };
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint((part(seconds) + part(nanos)) as u64, out);
    for (number, value) in [(SECONDS, seconds), (NANOS, nanos)] {
        if value != 0 {
            encode_key(number, WireType::Varint, out);
            encode_varint(value, out);
        }
    }
}

/// A `Contact` encoded by `ListedContacts`.
pub type ContactBytes = Encoded<Contact>;

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use proptest::prelude::*;
    use serde_json::json;

    use prost::Message;

    use super::*;
    use crate::api::convert;
    use crate::domain::{ContactId, ContactView, Email, PropertiesJson};

    fn view(
        properties: &str,
        flags: (bool, bool),
        micros: (i64, i64),
        revision: i64,
    ) -> ContactView {
        ContactView {
            id: ContactId::from_trusted("con_01jq".into()),
            email: Email::from_trusted("Zoë@Example.com".into()),
            properties: PropertiesJson::from_trusted(properties.into()),
            suppressed: flags.0,
            unsubscribed: flags.1,
            created_at: DateTime::from_timestamp_micros(micros.0).expect("a time"),
            updated_at: DateTime::from_timestamp_micros(micros.1).expect("a time"),
            revision,
        }
    }

    /// What the server sent before: prost's encoding of the converted message.
    fn assert_as_converted(view: ContactView) {
        let mut listed = Vec::new();
        ListedContacts
            .encode(&view.borrowed(), &mut listed)
            .expect("encodes");
        let converted = convert::contact_view(view).expect("converts");
        assert_eq!(listed, converted.encode_to_vec(), "{converted:?}");
    }

    #[test]
    fn a_listed_contact_is_encoded_as_the_converted_message_is() {
        let deep = json!({"s": "x".repeat(200), "n": -1.5, "o": {"l": [1, null, true]}});
        for properties in ["{}", r#"{"plan":"pro"}"#, &deep.to_string()] {
            for flags in [(false, false), (true, false), (false, true), (true, true)] {
                assert_as_converted(view(properties, flags, (1_700_000_000_123_456, 1), 1));
            }
        }
        // Times at and before the epoch (seconds and nanos at their defaults, or
        // negative seconds), whole seconds, and revisions of every width.
        for micros in [(0, 0), (-1, -1_500_000), (2_000_000, 1_000_001)] {
            for revision in [1, 9, 10, 123_456, i64::MAX] {
                assert_as_converted(view("{}", (false, false), micros, revision));
            }
        }
    }

    #[test]
    fn properties_that_are_not_an_object_do_not_encode() {
        for text in ["[]", "1", "{", r#"{"a":1} x"#] {
            let mut out = Vec::new();
            let bad = view(text, (false, false), (0, 0), 1);
            assert!(
                ListedContacts.encode(&bad.borrowed(), &mut out).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn contact_bytes_read_back_as_the_contact_they_hold() {
        let converted =
            convert::contact_view(view("{\"a\":1}", (true, false), (5, 6), 3)).expect("converts");
        let bytes = ContactBytes::from_bytes(converted.encode_to_vec().into());
        let decoded = ContactBytes::decode(bytes.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, bytes);
        let contact = Contact::decode(decoded.encode_to_vec().as_slice()).expect("a contact");
        assert_eq!(contact, converted);
    }

    proptest! {
        #[test]
        fn any_row_is_encoded_as_the_converted_message_is(
            id in "[a-z0-9_]{0,30}",
            email in "\\PC{0,40}",
            key in "\\PC{0,10}",
            text in "\\PC{0,300}",
            flags in any::<(bool, bool)>(),
            micros in (-62_000_000_000_000_000i64..250_000_000_000_000_000, 0i64..i64::MAX / 1000),
            revision in any::<i64>(),
        ) {
            let properties = json!({ key: text }).to_string();
            let mut contact = view(&properties, flags, micros, revision);
            contact.id = ContactId::from_trusted(id);
            contact.email = Email::from_trusted(email);
            assert_as_converted(contact);
        }
    }
}
