//! Protobuf <-> domain conversions. Parsing happens here, at the edge: a request
//! that converts is valid.

use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Timestamp, Value as PbValue};
use serde_json::{Map, Number, Value};

use super::{pb, wire};
use crate::domain::{
    Contact, ContactUpdate, ContactUpsert, ContactView, Email, Etag, NewContact, Properties,
    PropertiesPatch, TimelineEntry, ValidationError,
};
use crate::store::StoreError;

/// Largest integer an f64 holds exactly; integral numbers up to it are kept as integers.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// A contact just written, for the response.
pub(crate) fn contact(contact: Contact) -> wire::Contact {
    wire::Contact {
        properties: Some(wire::struct_from_map(contact.properties.as_map())),
        id: contact.id.into_string(),
        email: contact.email.into_string(),
        suppressed: contact.suppressed,
        unsubscribed: contact.unsubscribed,
        created_at: Some(timestamp(contact.created_at)),
        updated_at: Some(timestamp(contact.updated_at)),
        etag: Etag::of(contact.revision),
    }
}

/// A contact read from the store, for the response: its stored JSON goes straight to
/// the wire. Fails only if the store holds something that is not a JSON object.
pub(crate) fn contact_view(contact: ContactView) -> Result<wire::Contact, StoreError> {
    Ok(wire::Contact {
        properties: Some(
            wire::struct_from_json(contact.properties.as_str()).map_err(StoreError::internal)?,
        ),
        id: contact.id.into_string(),
        email: contact.email.into_string(),
        suppressed: contact.suppressed,
        unsubscribed: contact.unsubscribed,
        created_at: Some(timestamp(contact.created_at)),
        updated_at: Some(timestamp(contact.updated_at)),
        etag: Etag::of(contact.revision),
    })
}

/// `contact_view` of a contact that stays where it is (a change of a batch that other
/// watchers share): its text is transcoded from the borrow, not copied first.
pub(crate) fn contact_view_ref(contact: &ContactView) -> Result<wire::Contact, StoreError> {
    Ok(wire::Contact {
        properties: Some(
            wire::struct_from_json(contact.properties.as_str()).map_err(StoreError::internal)?,
        ),
        id: contact.id.as_str().to_owned(),
        email: contact.email.as_str().to_owned(),
        suppressed: contact.suppressed,
        unsubscribed: contact.unsubscribed,
        created_at: Some(timestamp(contact.created_at)),
        updated_at: Some(timestamp(contact.updated_at)),
        etag: Etag::of(contact.revision),
    })
}

pub fn timeline_entry(entry: TimelineEntry) -> pb::TimelineEntry {
    pb::TimelineEntry {
        id: entry.id,
        r#type: entry.kind,
        timestamp: Some(timestamp(entry.timestamp)),
        data: Some(to_struct(entry.data)),
    }
}

impl TryFrom<pb::CreateContactRequest> for NewContact {
    type Error = ValidationError;

    fn try_from(request: pb::CreateContactRequest) -> Result<Self, Self::Error> {
        let properties = match request.properties {
            Some(properties) => {
                Properties::parse(from_struct(properties, "properties")?, "properties")?
            }
            None => Properties::default(),
        };
        Ok(Self {
            email: Email::parse(&request.email, "email")?,
            properties,
        })
    }
}

impl TryFrom<pb::UpsertContactRequest> for ContactUpsert {
    type Error = ValidationError;

    fn try_from(request: pb::UpsertContactRequest) -> Result<Self, Self::Error> {
        upsert(&request.email, request.properties, "")
    }
}

/// An upsert of `email` with `properties`; `prefix` leads the field names of its
/// errors (`rows[3].` for an import row).
pub(crate) fn upsert(
    email: &str,
    properties: Option<Struct>,
    prefix: &str,
) -> Result<ContactUpsert, ValidationError> {
    let field = format!("{prefix}properties");
    let properties = match properties {
        Some(properties) => PropertiesPatch::parse(from_struct(properties, &field)?, &field)?,
        None => PropertiesPatch::default(),
    };
    Ok(ContactUpsert {
        email: Email::parse(email, &format!("{prefix}email"))?,
        properties,
    })
}

impl TryFrom<pb::UpdateContactRequest> for ContactUpdate {
    type Error = ValidationError;

    fn try_from(request: pb::UpdateContactRequest) -> Result<Self, Self::Error> {
        let properties = request
            .properties
            .map(|properties| {
                PropertiesPatch::parse(from_struct(properties, "properties")?, "properties")
            })
            .transpose()?;
        Ok(Self {
            email: request
                .email
                .as_deref()
                .map(|email| Email::parse(email, "email"))
                .transpose()?,
            properties,
        })
    }
}

/// Converts a Struct to a JSON object; NaN and infinities have no JSON form and are
/// refused, naming the key.
pub fn from_struct(value: Struct, field: &str) -> Result<Map<String, Value>, ValidationError> {
    let mut map = Map::new();
    for (key, value) in value.fields {
        let path = format!("{field}.{key}");
        let json = from_value(value, &path)?;
        map.insert(key, json);
    }
    Ok(map)
}

fn from_value(value: PbValue, path: &str) -> Result<Value, ValidationError> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => number(n, path)?,
        Some(Kind::StructValue(s)) => Value::Object(from_struct(s, path)?),
        Some(Kind::ListValue(list)) => {
            let mut items = Vec::with_capacity(list.values.len());
            for item in list.values {
                items.push(from_value(item, path)?);
            }
            Value::Array(items)
        }
    })
}

fn number(n: f64, path: &str) -> Result<Value, ValidationError> {
    if !n.is_finite() {
        let short: String = path.chars().take(80).collect();
        return Err(ValidationError::new(
            short,
            "numbers must be finite (no NaN or infinity)",
        ));
    }
    // Keep integral values integral, so `42` reads back and matches searches as `42`.
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        return Ok(Value::Number(Number::from(n as i64)));
    }
    Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
}

pub fn to_struct(map: Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .into_iter()
            .map(|(key, value)| (key, to_value(value)))
            .collect(),
    }
}

pub fn to_value(value: Value) -> PbValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    PbValue { kind: Some(kind) }
}
