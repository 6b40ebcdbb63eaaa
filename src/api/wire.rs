//! The server's own encoding of the messages that carry a Contact. A contact's
//! properties are a `google.protobuf.Struct` on the wire and JSON in the store; the
//! generated types would turn the stored JSON into a tree of `serde_json` values, then
//! into a tree of `Struct` values, and then encode that. Here the JSON is transcoded
//! straight into the bytes of the `Struct`, in one pass, and the message carries those
//! bytes: an embedded message and a `bytes` field are the same on the wire. The
//! ContactsService server (generated a second time by build.rs) answers with these
//! types; clients, reflection and the contract keep the generated ones, and the tests
//! below decode what is encoded here with them.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The ContactsService server, speaking the types below.
pub mod server {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("server/kraiter.contacts.v1");
}

/// `kraiter.contacts.v1.Contact`, with `properties` already encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Contact {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub email: String,
    /// The encoded `google.protobuf.Struct` (see `struct_from_json`); `Some` even when
    /// empty, so the field is present as it is for the generated type.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub properties: Option<Vec<u8>>,
    #[prost(bool, tag = "4")]
    pub suppressed: bool,
    #[prost(bool, tag = "5")]
    pub unsubscribed: bool,
    #[prost(message, optional, tag = "6")]
    pub created_at: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub updated_at: Option<prost_types::Timestamp>,
    #[prost(string, tag = "8")]
    pub etag: String,
}

/// `kraiter.contacts.v1.GetContactByEmailResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetContactByEmailResponse {
    #[prost(message, optional, tag = "1")]
    pub contact: Option<Contact>,
}

/// `kraiter.contacts.v1.UpsertContactResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpsertContactResponse {
    #[prost(message, optional, tag = "1")]
    pub contact: Option<Contact>,
    #[prost(bool, tag = "2")]
    pub created: bool,
}

/// `kraiter.contacts.v1.BatchGetContactsResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchGetContactsResponse {
    #[prost(message, repeated, tag = "1")]
    pub contacts: Vec<Contact>,
    #[prost(string, repeated, tag = "2")]
    pub missing: Vec<String>,
}

/// `kraiter.contacts.v1.ListContactsResponse`, its contacts encoded as the store read
/// them (`listed.rs`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContactsResponse {
    #[prost(message, repeated, tag = "1")]
    pub contacts: Vec<ContactBytes>,
    #[prost(string, tag = "2")]
    pub next_cursor: String,
}

/// The fields of `kraiter.contacts.v1.ContactChange`, encoded into a `ContactChange`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContactChangeFields {
    #[prost(string, tag = "1")]
    pub token: String,
    #[prost(enumeration = "crate::api::pb::ContactChangeType", tag = "2")]
    pub r#type: i32,
    #[prost(string, tag = "3")]
    pub contact_id: String,
    #[prost(message, optional, tag = "4")]
    pub contact: Option<Contact>,
    #[prost(string, repeated, tag = "5")]
    pub changed_fields: Vec<String>,
    #[prost(message, optional, tag = "6")]
    pub occurred_at: Option<prost_types::Timestamp>,
}

/// A message of type `M` already encoded: the messages that share a buffer (a
/// query's contacts, a read of the feed that several watchers send) are slices of
/// it, and a clone only counts a reference.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoded<M>(bytes::Bytes, std::marker::PhantomData<M>);

impl<M> Encoded<M> {
    /// `bytes`, which hold an encoded `M`.
    pub fn from_bytes(bytes: bytes::Bytes) -> Self {
        Self(bytes, std::marker::PhantomData)
    }
}

impl<M: prost::Message + Default> prost::Message for Encoded<M> {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    /// Never on the server's path (it only sends these): decodes through `M`.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let mut message = M::decode(self.0.clone())?;
        message.merge_field(tag, wire_type, buf, ctx)?;
        *self = Self::from_bytes(message.encode_to_vec().into());
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = bytes::Bytes::new();
    }
}

/// `kraiter.contacts.v1.ContactChange` (WatchContacts' stream message), encoded.
pub type ContactChange = Encoded<ContactChangeFields>;

impl ContactChange {
    /// The message of these fields.
    pub fn new(fields: &ContactChangeFields) -> Self {
        Self::from_bytes(prost::Message::encode_to_vec(fields).into())
    }

    /// The messages of `fields`, encoded into one buffer (`capacity` bytes to start
    /// with: one allocation for a batch when it is a good guess). Each message's
    /// fields are made and dropped in turn, so a batch is never held twice over.
    pub fn encode_all(
        fields: impl IntoIterator<Item = ContactChangeFields>,
        capacity: usize,
    ) -> Vec<Self> {
        let mut buf = bytes::BytesMut::with_capacity(capacity);
        let mut ends = Vec::new();
        for message in fields {
            prost::Message::encode_raw(&message, &mut buf);
            ends.push(buf.len());
        }
        let buf = buf.freeze();
        let mut start = 0;
        ends.into_iter()
            .map(|end| {
                let message = Self::from_bytes(buf.slice(start..end));
                start = end;
                message
            })
            .collect()
    }
}

// Field numbers of google/protobuf/struct.proto.
const STRUCT_FIELDS: u32 = 1;
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;
const VALUE_NULL: u32 = 1;
const VALUE_NUMBER: u32 = 2;
const VALUE_STRING: u32 = 3;
const VALUE_BOOL: u32 = 4;
const VALUE_STRUCT: u32 = 5;
const VALUE_LIST: u32 = 6;
const LIST_VALUES: u32 = 1;

/// The `Struct` encoding of a JSON object's text.
pub fn struct_from_json(json: &str) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(json.len() + json.len() / 4);
    struct_into(json, &mut out)?;
    Ok(out)
}

/// Appends the `Struct` encoding of a JSON object's text to `out`; on an error, part
/// of it may have been appended.
fn struct_into(json: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(StructFields(out))?;
    de.end()
}

/// The `Struct` encoding of a JSON object.
pub fn struct_from_map(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    write_fields(map, &mut out);
    out
}

/// Runs `body`, which appends a message's content, then makes it field `field`.
fn nested<E>(
    out: &mut Vec<u8>,
    field: u32,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = open(out, field);
    body(out)?;
    close(out, start);
    Ok(())
}

/// `nested` for a message that may not follow: `body` says whether it wrote one, and
/// if not, the field's key and length are taken back. Returns what `body` said.
fn nested_if_any<E>(
    out: &mut Vec<u8>,
    field: u32,
    body: impl FnOnce(&mut Vec<u8>) -> Result<bool, E>,
) -> Result<bool, E> {
    let mark = out.len();
    let start = open(out, field);
    let wrote = body(out)?;
    if wrote {
        close(out, start);
    } else {
        out.truncate(mark);
    }
    Ok(wrote)
}

/// Starts field `field`, a message of a length not known yet: its key and a
/// one-byte length, which `close` fills in. Returns where the content starts.
fn open(out: &mut Vec<u8>, field: u32) -> usize {
    encode_key(field, WireType::LengthDelimited, out);
    out.push(0);
    out.len()
}

/// Sets the length of the field opened at `start` to what was written since. Most
/// nested messages of properties are under 128 bytes, whose length fits the byte
/// `open` left; a longer one moves its content to make room.
fn close(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    if len < 0x80 {
        out[start - 1] = len as u8;
        return;
    }
    let mut head = [0u8; 10];
    let mut buf = &mut head[..];
    encode_varint(len as u64, &mut buf);
    let used = 10 - buf.len();
    debug_assert_eq!(used, encoded_len_varint(len as u64));
    out[start - 1] = head[0];
    out.splice(start..start, head[1..used].iter().copied());
}

fn put_str(out: &mut Vec<u8>, field: u32, text: &str) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(text.len() as u64, out);
    out.extend_from_slice(text.as_bytes());
}

// The content of one `Value` message: exactly one field of its `kind` oneof, which is
// written even when it holds a default (that is how a oneof says which it is).

fn put_null(out: &mut Vec<u8>) {
    encode_key(VALUE_NULL, WireType::Varint, out);
    encode_varint(0, out);
}

fn put_number(out: &mut Vec<u8>, n: f64) {
    encode_key(VALUE_NUMBER, WireType::SixtyFourBit, out);
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_bool(out: &mut Vec<u8>, b: bool) {
    encode_key(VALUE_BOOL, WireType::Varint, out);
    encode_varint(u64::from(b), out);
}

fn write_fields(map: &Map<String, Value>, out: &mut Vec<u8>) {
    for (key, value) in map {
        let entry = open(out, STRUCT_FIELDS);
        put_str(out, ENTRY_KEY, key);
        let start = open(out, ENTRY_VALUE);
        write_value(value, out);
        close(out, start);
        close(out, entry);
    }
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => put_null(out),
        Value::Bool(b) => put_bool(out, *b),
        Value::Number(n) => put_number(out, n.as_f64().unwrap_or(0.0)),
        Value::String(s) => put_str(out, VALUE_STRING, s),
        Value::Array(items) => {
            let start = open(out, VALUE_LIST);
            for item in items {
                let item_start = open(out, LIST_VALUES);
                write_value(item, out);
                close(out, item_start);
            }
            close(out, start);
        }
        Value::Object(map) => {
            let start = open(out, VALUE_STRUCT);
            write_fields(map, out);
            close(out, start);
        }
    }
}

/// Writes the fields of a `Struct` from a JSON object.
struct StructFields<'a>(&'a mut Vec<u8>);

/// Writes the content of a `Value` from any JSON value.
struct ValueKind<'a>(&'a mut Vec<u8>);

/// Writes an entry's key.
struct EntryKey<'a>(&'a mut Vec<u8>);

impl<'de> Visitor<'de> for StructFields<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // The key and the value make one entry.
        while nested_if_any(self.0, STRUCT_FIELDS, |out| {
            if map.next_key_seed(EntryKey(out))?.is_none() {
                return Ok(false);
            }
            nested(out, ENTRY_VALUE, |out| map.next_value_seed(ValueKind(out)))?;
            Ok(true)
        })? {}
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for EntryKey<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for EntryKey<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<(), E> {
        put_str(self.0, ENTRY_KEY, key);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ValueKind<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueKind<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        put_null(self.0);
        Ok(())
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        put_bool(self.0, b);
        Ok(())
    }

    // As `serde_json::Number::as_f64` converts, so both paths give the same double.
    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        put_number(self.0, n as f64);
        Ok(())
    }

    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        put_number(self.0, n as f64);
        Ok(())
    }

    fn visit_f64<E>(self, n: f64) -> Result<(), E> {
        put_number(self.0, n);
        Ok(())
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        put_str(self.0, VALUE_STRING, s);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        nested(self.0, VALUE_LIST, |out| {
            while nested_if_any(out, LIST_VALUES, |out| {
                Ok(seq.next_element_seed(ValueKind(out))?.is_some())
            })? {}
            Ok(())
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        nested(self.0, VALUE_STRUCT, |out| StructFields(out).visit_map(map))
    }
}

#[cfg(test)]
mod drift;
mod listed;

pub use listed::{ContactBytes, ListedContacts};

#[cfg(test)]
mod tests;
