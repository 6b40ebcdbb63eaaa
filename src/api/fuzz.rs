//! Fuzzing of request validation (issue 7): arbitrary requests, as a caller could
//! encode them, convert or are refused naming a field; none panics, and what
//! converts keeps the limits. `PROPTEST_CASES` raises the number of cases.

use proptest::prelude::*;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Timestamp, Value as PbValue};

use super::convert::{from_struct, to_struct};
use super::convert_activity as conv;
use super::pb;
use crate::domain::{ContactUpdate, NewContact};

fn pb_value() -> impl Strategy<Value = PbValue> {
    let leaf = prop_oneof![
        Just(None),
        Just(Some(Kind::NullValue(0))),
        any::<i32>().prop_map(|n| Some(Kind::NullValue(n))),
        any::<bool>().prop_map(|b| Some(Kind::BoolValue(b))),
        any::<f64>().prop_map(|n| Some(Kind::NumberValue(n))),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            Just(9.1e15)
        ]
        .prop_map(|n| Some(Kind::NumberValue(n))),
        ".{0,30}".prop_map(|s| Some(Kind::StringValue(s))),
    ]
    .prop_map(|kind| PbValue { kind });
    leaf.prop_recursive(24, 300, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|values| PbValue {
                kind: Some(Kind::ListValue(ListValue { values })),
            }),
            prop::collection::btree_map(".{0,10}", inner, 0..6).prop_map(|fields| PbValue {
                kind: Some(Kind::StructValue(Struct { fields })),
            }),
        ]
    })
}

fn pb_struct() -> impl Strategy<Value = Struct> {
    prop::collection::btree_map(".{0,20}", pb_value(), 0..8).prop_map(|fields| Struct { fields })
}

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    prop::option::of(
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }),
    )
}

/// Strings as callers send them: mostly short, sometimes empty, odd or long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,20}",
        1 => Just(String::new()),
        1 => "con_[0-9A-HJKMNP-TV-Z]{26}",
        1 => "[a-z]{1,10}@[a-z]{1,10}\\.[a-z]{2,5}",
        1 => ".{250,300}",
    ]
}

/// A conversion either succeeds or names the request field it refuses, with a
/// description; anything else fails the property.
fn named<T>(converted: Result<T, crate::domain::ValidationError>) -> Result<(), TestCaseError> {
    if let Err(err) = converted {
        prop_assert!(!err.field.is_empty(), "a refusal without a field: {err:?}");
        prop_assert!(
            !err.description.is_empty(),
            "a refusal without a reason: {err:?}"
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn create_and_update_requests_convert_or_name_a_field(
        email in text(),
        properties in prop::option::of(pb_struct()),
        update_email in prop::option::of(text()),
    ) {
        let request = pb::CreateContactRequest { email: email.clone(), properties: properties.clone(), ..Default::default() };
        match NewContact::try_from(request) {
            // What converts reads back as what was validated.
            Ok(new) => {
                let map = new.properties.as_map().clone();
                let back = from_struct(to_struct(map.clone()), "properties");
                prop_assert_eq!(back, Ok(map));
            }
            Err(err) => prop_assert!(!err.field.is_empty()),
        }
        let update = pb::UpdateContactRequest { id: String::new(), email: update_email, properties, ..Default::default() };
        if let Err(err) = ContactUpdate::try_from(update) {
            prop_assert!(!err.field.is_empty());
        }
    }

    #[test]
    fn ingestion_requests_convert_or_name_a_field(
        (a, b, c, d) in (text(), text(), text(), text()),
        (status, source, step) in (-2i32..10, -2i32..6, any::<i32>()),
        at in timestamp(),
        properties in prop::option::of(pb_struct()),
        by_email in any::<bool>(),
    ) {
        let recipient = if by_email {
            pb::record_send_request::Recipient::Email(a.clone())
        } else {
            pb::record_send_request::Recipient::ContactId(a.clone())
        };
        let send = pb::RecordSendRequest {
            request_id: d.clone(),
            recipient: Some(recipient),
            template_id: b.clone(),
            template_name: c.clone(),
            subject: c.clone(),
            status,
            source,
            source_id: d.clone(),
            scheduled_send_id: c.clone(),
            occurred_at: at,
        };
        named(conv::idempotency("RecordSend", &send.request_id, &send))?;
        named(conv::new_send(send))?;
        named(conv::status_change(pb::UpdateSendStatusRequest {
            request_id: d.clone(),
            send_id: a.clone(),
            status,
            occurred_at: at,
        }))?;
        named(conv::engagement(pb::RecordSendEngagementRequest {
            request_id: d.clone(),
            send_id: a.clone(),
            engagement: status,
            url: c.clone(),
            occurred_at: at,
        }))?;
        named(conv::new_scheduled_send(pb::ScheduleSendRequest {
            request_id: d.clone(),
            contact_id: a.clone(),
            template_id: b.clone(),
            template_name: c.clone(),
            subject: c.clone(),
            scheduled_for: at,
            source,
            source_id: d.clone(),
            step,
        }))?;
        named(conv::scheduled_send_id(&a))?;
        named(conv::new_enrolment(pb::EnrolContactRequest {
            request_id: d.clone(),
            contact_id: a.clone(),
            sequence_id: b.clone(),
            sequence_name: c.clone(),
            occurred_at: at,
        }))?;
        named(conv::enrolment_change(pb::UpdateEnrolmentRequest {
            request_id: d.clone(),
            contact_id: a.clone(),
            sequence_id: b.clone(),
            status,
            current_step: Some(step),
            occurred_at: at,
        }))?;
        named(conv::membership_change(pb::SetSegmentMembershipRequest {
            request_id: d.clone(),
            contact_id: a.clone(),
            segment_id: b.clone(),
            segment_name: c.clone(),
            member: by_email,
            occurred_at: at,
        }))?;
        let subject = if by_email {
            pb::track_event_request::Subject::Email(a)
        } else {
            pb::track_event_request::Subject::ContactId(a)
        };
        let converted = conv::new_event(pb::TrackEventRequest {
            request_id: d,
            subject: Some(subject),
            name: b,
            properties,
            occurred_at: at,
        });
        if let Ok(event) = converted {
            prop_assert!(!event.name.trim().is_empty());
        }
    }

    #[test]
    fn any_time_converts_within_range_or_is_refused(at in timestamp()) {
        if let Ok(time) = conv::time(at, "occurred_at") {
            let year = chrono::Datelike::year(&time);
            prop_assert!((1..=9999).contains(&year), "{time}");
        }
    }
}
