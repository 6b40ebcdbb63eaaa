//! Arbitrary ingestion requests, generated as `src/api/fuzz.rs` generates them for
//! the conversions, sent to a real server: each is accepted, or refused with
//! INVALID_ARGUMENT naming the field at fault (`BadRequest`), or NOT_FOUND or
//! FAILED_PRECONDITION for what it points at; never another code, never a message
//! that leaks. Ids are sometimes the fixture's real ones, so requests get past the
//! lookups. The cases are the same on every run (a deterministic runner).

use std::collections::BTreeMap;

use kraiter_contacts::api::pb;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use prost_types::value::Kind;
use prost_types::{Struct, Timestamp, Value};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::conformance;
use crate::support::requests::{Fixture, fixture};
use crate::support::{Activity, Backend, assert_clean_message, spawn_app};

const CASES: usize = 64;

/// Strings as callers send them, and now and then an id or email the server knows.
fn text(known: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        16 => proptest::sample::select(known),
        3 => "[a-z0-9_.-]{1,12}",
        2 => ".{0,20}",
        1 => Just(String::new()),
        1 => "con_[0-9A-HJKMNP-TV-Z]{26}",
        1 => "[a-z]{1,10}@[a-z]{1,10}\\.[a-z]{2,5}",
        1 => ".{250,300}",
    ]
}

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    prop_oneof![
        Just(None),
        (0i64..4_000_000_000, 0i32..1_000_000_000)
            .prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
        (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
    ]
}

fn properties() -> impl Strategy<Value = Option<Struct>> {
    let value = prop_oneof![
        any::<bool>().prop_map(Kind::BoolValue),
        any::<f64>().prop_map(Kind::NumberValue),
        ".{0,20}".prop_map(Kind::StringValue),
        Just(Kind::NullValue(0)),
    ]
    .prop_map(|kind| Value { kind: Some(kind) });
    prop::option::of(
        prop::collection::btree_map(".{0,10}", value, 0..4)
            .prop_map(|fields: BTreeMap<String, Value>| Struct { fields }),
    )
}

/// The values one case puts in the ingestion requests, by the role they play.
#[derive(Debug, Clone)]
struct Case {
    contact: String,
    /// Used instead of `contact` where a request may name either, with `by_email`.
    email: String,
    send: String,
    scheduled: String,
    /// Template, sequence, segment and event ids and names.
    name: String,
    /// Display names, subjects, URLs, source ids.
    label: String,
    request_id: String,
    /// Send status (also engagement, enrolment status), source, step.
    numbers: (i32, i32, i32),
    at: Option<Timestamp>,
    properties: Option<Struct>,
    by_email: bool,
}

fn case(f: &Fixture) -> impl Strategy<Value = Case> {
    let known = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
    (
        (
            text(known(&[&f.contact])),
            text(known(&[&f.email, "new@example.com"])),
            text(known(&[&f.send])),
            text(known(&[&f.scheduled, ""])),
            text(known(&["seq", "vip", "welcome"])),
            text(known(&["Welcome", "https://example.com/a"])),
            text(known(&[""])),
        ),
        (
            prop_oneof![3 => 1i32..5, 1 => -2i32..10],
            prop_oneof![3 => 1i32..4, 1 => -2i32..6],
            prop_oneof![3 => 0i32..5, 1 => any::<i32>()],
        ),
        timestamp(),
        properties(),
        any::<bool>(),
    )
        .prop_map(|(texts, numbers, at, properties, by_email)| {
            let (contact, email, send, scheduled, name, label, request_id) = texts;
            Case {
                contact,
                email,
                send,
                scheduled,
                name,
                label,
                request_id,
                numbers,
                at,
                properties,
                by_email,
            }
        })
}

/// Sends every ingestion RPC built from `case`; each outcome with the request.
async fn send_all(activity: &mut Activity, case: Case) -> Vec<(String, Result<(), Status>)> {
    let Case {
        contact,
        email,
        send,
        scheduled,
        name,
        label,
        request_id,
        numbers: (status, source, step),
        at,
        properties,
        by_email,
    } = case;
    let mut outcomes = Vec::new();
    macro_rules! call {
        ($method:ident, $request:expr) => {{
            let request = $request;
            let what = format!("{request:?}");
            let result = activity.$method(request).await.map(drop);
            outcomes.push((what, result));
        }};
    }
    let recipient = if by_email {
        pb::record_send_request::Recipient::Email(email.clone())
    } else {
        pb::record_send_request::Recipient::ContactId(contact.clone())
    };
    call!(
        record_send,
        pb::RecordSendRequest {
            request_id: request_id.clone(),
            recipient: Some(recipient),
            template_id: name.clone(),
            template_name: label.clone(),
            subject: label.clone(),
            status,
            source,
            source_id: label.clone(),
            scheduled_send_id: scheduled.clone(),
            occurred_at: at,
        }
    );
    call!(
        update_send_status,
        pb::UpdateSendStatusRequest {
            request_id: request_id.clone(),
            send_id: send.clone(),
            status,
            occurred_at: at,
        }
    );
    call!(
        record_send_engagement,
        pb::RecordSendEngagementRequest {
            request_id: request_id.clone(),
            send_id: send,
            engagement: status,
            url: label.clone(),
            occurred_at: at,
        }
    );
    call!(
        schedule_send,
        pb::ScheduleSendRequest {
            request_id: request_id.clone(),
            contact_id: contact.clone(),
            template_id: name.clone(),
            template_name: label.clone(),
            subject: label.clone(),
            scheduled_for: at,
            source,
            source_id: label.clone(),
            step,
        }
    );
    call!(
        cancel_scheduled_send,
        pb::CancelScheduledSendRequest {
            request_id: request_id.clone(),
            scheduled_send_id: scheduled,
        }
    );
    call!(
        enrol_contact,
        pb::EnrolContactRequest {
            request_id: request_id.clone(),
            contact_id: contact.clone(),
            sequence_id: name.clone(),
            sequence_name: label.clone(),
            occurred_at: at,
        }
    );
    call!(
        update_enrolment,
        pb::UpdateEnrolmentRequest {
            request_id: request_id.clone(),
            contact_id: contact.clone(),
            sequence_id: name.clone(),
            status,
            current_step: Some(step),
            occurred_at: at,
        }
    );
    call!(
        set_segment_membership,
        pb::SetSegmentMembershipRequest {
            request_id: request_id.clone(),
            contact_id: contact.clone(),
            segment_id: name.clone(),
            segment_name: label,
            member: by_email,
            occurred_at: at,
        }
    );
    let subject = if by_email {
        pb::track_event_request::Subject::Email(email)
    } else {
        pb::track_event_request::Subject::ContactId(contact)
    };
    call!(
        track_event,
        pb::TrackEventRequest {
            request_id,
            subject: Some(subject),
            name,
            properties,
            occurred_at: at,
        }
    );
    outcomes
}

async fn arbitrary_ingestion_requests_are_accepted_or_refused_naming_a_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut clients = (app.client(), app.activity());
    let f = fixture(&mut clients).await;
    let mut runner = TestRunner::deterministic();
    let strategy = case(&f);
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..CASES {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        for (what, result) in send_all(&mut clients.1, case).await {
            let code = result.as_ref().err().map_or(Code::Ok, Status::code);
            *codes.entry(format!("{code:?}")).or_default() += 1;
            let Err(status) = result else { continue };
            assert_clean_message(&status, &app.key, &what);
            match status.code() {
                Code::InvalidArgument => {
                    let violations = status
                        .get_details_bad_request()
                        .map(|bad| bad.field_violations)
                        .unwrap_or_default();
                    assert!(
                        !violations.is_empty() && violations.iter().all(|v| !v.field.is_empty()),
                        "{what}: refused without naming a field: {status:?}"
                    );
                }
                Code::NotFound | Code::FailedPrecondition => {}
                _ => panic!("{what}: {status:?}"),
            }
        }
    }
    println!("arbitrary ingestion requests ({backend:?}): {codes:?}");
    // The cases reach past validation, not only into it.
    for code in ["Ok", "InvalidArgument", "FailedPrecondition"] {
        assert!(
            codes.contains_key(code),
            "no case answered {code}: {codes:?}"
        );
    }
}

conformance!(arbitrary_ingestion_requests_are_accepted_or_refused_naming_a_field);
