//! Hostile values that are not strings: limits, enums, timestamps, properties,
//! internationalised and edge-case emails, and cursors that are garbage, truncated,
//! altered, forged, or from another list, query, contact or tenant.

use kraiter_contacts::api::pb;
use kraiter_contacts::domain::TenantId;
use pb::record_send_request::Recipient;
use pb::track_event_request::Subject;
use prost_types::value::Kind;
use serde_json::{Value, json};
use tonic::Code;

use crate::conformance;
use crate::hostile::cursors::{EITHER, cursor_cases, forged_cases};
use crate::hostile::strings::check;
use crate::support::requests::{Fixture, Req, fixture};
use crate::support::{Backend, props, spawn_app};

const OK: Code = Code::Ok;
const INVALID: Code = Code::InvalidArgument;

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("leaf"), |inner, _| json!({ "k": inner }))
}

fn number(value: f64) -> prost_types::Struct {
    let mut s = prost_types::Struct::default();
    s.fields.insert(
        "n".into(),
        prost_types::Value {
            kind: Some(Kind::NumberValue(value)),
        },
    );
    s
}

/// Property sets, with their code on create, update and track.
fn property_cases() -> Vec<(String, prost_types::Struct, Code)> {
    let many_keys: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("key{i:05}"), json!(i)))
        .collect();
    let list_with_nan = prost_types::Struct {
        fields: [(
            "l".to_owned(),
            prost_types::Value {
                kind: Some(Kind::ListValue(prost_types::ListValue {
                    values: vec![prost_types::Value {
                        kind: Some(Kind::NumberValue(f64::NAN)),
                    }],
                })),
            },
        )]
        .into(),
    };
    vec![
        (
            "huge value".into(),
            props(json!({"a": "x".repeat(70_000)})),
            INVALID,
        ),
        (
            "nested 17 deep".into(),
            props(json!({"a": nested(17)})),
            INVALID,
        ),
        ("nested 16 deep".into(), props(json!({"a": nested(15)})), OK),
        (
            "huge key".into(),
            props(json!({"k".repeat(10_000): 1})),
            INVALID,
        ),
        ("key of 256".into(), props(json!({"k".repeat(256): 1})), OK),
        ("empty key".into(), props(json!({"": 1})), INVALID),
        ("NUL key".into(), props(json!({"a\0": 1})), INVALID),
        ("control key".into(), props(json!({"a\u{1b}": 1})), INVALID),
        (
            "NUL nested key".into(),
            props(json!({"a": {"b\0": 1}})),
            INVALID,
        ),
        ("NUL value".into(), props(json!({"a": "\0"})), INVALID),
        ("10k keys".into(), props(Value::Object(many_keys)), INVALID),
        ("NaN".into(), number(f64::NAN), INVALID),
        ("infinity".into(), number(f64::INFINITY), INVALID),
        ("minus infinity".into(), number(f64::NEG_INFINITY), INVALID),
        ("NaN in a list".into(), list_with_nan, INVALID),
        ("1e300".into(), number(1e300), OK),
        ("minus zero".into(), number(-0.0), OK),
        ("2^53 + 2".into(), number(9_007_199_254_740_994.0), OK),
        ("smallest subnormal".into(), number(f64::from_bits(1)), OK),
        ("emoji key".into(), props(json!({"🔑": "🔒"})), OK),
        ("empty struct".into(), prost_types::Struct::default(), OK),
    ]
}

fn time(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos })
}

/// (what, timestamp, code) for any `occurred_at`.
fn time_cases() -> Vec<(&'static str, Option<prost_types::Timestamp>, Code)> {
    vec![
        ("negative nanos", time(0, -1), INVALID),
        ("nanos of a whole second", time(0, 1_000_000_000), INVALID),
        ("i64::MAX seconds", time(i64::MAX, 0), INVALID),
        ("i64::MIN seconds", time(i64::MIN, 0), INVALID),
        ("year 10000", time(253_402_300_800, 0), INVALID),
        ("0001-01-01", time(-62_135_596_800, 0), OK),
        ("9999-12-31", time(253_402_300_799, 999_999_999), OK),
        ("epoch", time(0, 0), OK),
    ]
}

/// (what, email, code) on CreateContact: what the README promises is accepted.
fn email_cases() -> Vec<(&'static str, String, Code)> {
    let local = "a".repeat(64);
    // DNS labels are at most 63 characters: 58 + 1 + 58 + 1 + 59 + 12 = 189.
    let (b58, b59) = ("b".repeat(58), "b".repeat(59));
    let at_limit = format!("{local}@{b58}.{b58}.{b59}.example.com");
    let over_limit = format!("x{at_limit}");
    vec![
        ("IDN domain (U-label)", "user@bücher.example".into(), OK),
        (
            "IDN domain (punycode)",
            "user@xn--bcher-kva.example".into(),
            OK,
        ),
        ("non-ASCII local part", "josé@example.com".into(), OK),
        ("all non-ASCII", "用户@例子.广告".into(), OK),
        ("254 characters", at_limit, OK),
        ("255 characters", over_limit, INVALID),
        (
            "local part of 65",
            format!("{}@example.com", "a".repeat(65)),
            INVALID,
        ),
        ("plus tag", "a+tag@example.com".into(), OK),
        ("IP literal", "a@[127.0.0.1]".into(), INVALID),
        ("display name", "A <a@example.com>".into(), INVALID),
        ("single-label domain", "a@localhost".into(), INVALID),
        ("two at signs", "a@b@example.com".into(), INVALID),
        ("double dot", "a..b@example.com".into(), INVALID),
        ("leading dot", ".a@example.com".into(), INVALID),
        ("zero-width space", "a\u{200b}@example.com".into(), INVALID),
        (
            "right-to-left override",
            "a\u{202e}@example.com".into(),
            INVALID,
        ),
        ("NUL", "a\0@example.com".into(), INVALID),
        (
            "CRLF injection",
            "a@example.com\r\nBcc: b@example.com".into(),
            INVALID,
        ),
    ]
}

fn list(cursor: &str, limit: i32, max_pages: i32) -> Req {
    Req::List(pb::ListContactsRequest {
        cursor: cursor.into(),
        limit,
        max_pages,
        ..Default::default()
    })
}

fn number_cases(f: &Fixture) -> Vec<(String, Req, Code)> {
    let c = f.contact.clone();
    let mut cases = Vec::new();
    for (limit, max_pages, code) in [
        (-1, 0, INVALID),
        (i32::MIN, 0, INVALID),
        (0, -1, INVALID),
        (0, i32::MIN, INVALID),
        (0, 0, OK),
        (1, 1, OK),
        (i32::MAX, i32::MAX, OK),
    ] {
        let what = |list: &str| format!("{list} limit {limit} max_pages {max_pages}");
        cases.push((what("ListContacts"), list("", limit, max_pages), code));
        let sends = pb::ListContactSendsRequest {
            id: c.clone(),
            limit,
            max_pages,
            ..Default::default()
        };
        cases.push((what("ListContactSends"), Req::Sends(sends), code));
        let scheduled = pb::ListContactScheduledSendsRequest {
            id: c.clone(),
            limit,
            max_pages,
            ..Default::default()
        };
        cases.push((
            what("ListContactScheduledSends"),
            Req::Scheduled(scheduled),
            code,
        ));
        let timeline = pb::ListContactTimelineRequest {
            id: c.clone(),
            limit,
            max_pages,
            ..Default::default()
        };
        cases.push((what("ListContactTimeline"), Req::Timeline(timeline), code));
    }
    for (order, code) in [(999, INVALID), (-1, INVALID), (2, OK)] {
        let timeline = pb::ListContactTimelineRequest {
            id: c.clone(),
            order,
            ..Default::default()
        };
        cases.push((
            format!("timeline order {order}"),
            Req::Timeline(timeline),
            code,
        ));
    }
    let types = |n: usize| (0..n).map(|i| format!("type.{i}")).collect::<Vec<_>>();
    for (n, code) in [(32, OK), (33, INVALID)] {
        let timeline = pb::ListContactTimelineRequest {
            id: c.clone(),
            types: types(n),
            ..Default::default()
        };
        cases.push((format!("{n} timeline types"), Req::Timeline(timeline), code));
    }
    let send = |status: i32, source: i32| pb::RecordSendRequest {
        recipient: Some(Recipient::ContactId(c.clone())),
        template_id: "t".into(),
        status,
        source,
        ..Default::default()
    };
    let transactional = pb::SendSource::Transactional as i32;
    for (what, status, source, code) in [
        ("unknown status", 999, transactional, INVALID),
        ("negative status", -1, transactional, INVALID),
        (
            "new send DELIVERED",
            pb::SendStatus::Delivered as i32,
            transactional,
            INVALID,
        ),
        ("no source", 0, 0, INVALID),
        ("unknown source", 0, 999, INVALID),
    ] {
        cases.push((
            format!("RecordSend {what}"),
            Req::RecordSend(send(status, source)),
            code,
        ));
    }
    for (what, status, code) in [
        ("unspecified", 0, INVALID),
        ("unknown", 999, INVALID),
        (
            "backwards to QUEUED",
            pb::SendStatus::Queued as i32,
            Code::FailedPrecondition,
        ),
    ] {
        let request = pb::UpdateSendStatusRequest {
            send_id: f.send.clone(),
            status,
            ..Default::default()
        };
        cases.push((
            format!("UpdateSendStatus {what}"),
            Req::SendStatus(request),
            code,
        ));
    }
    for (engagement, code) in [(0, INVALID), (999, INVALID)] {
        let request = pb::RecordSendEngagementRequest {
            send_id: f.send.clone(),
            engagement,
            ..Default::default()
        };
        cases.push((
            format!("engagement {engagement}"),
            Req::Engagement(request),
            code,
        ));
    }
    for (step, code) in [(-1, INVALID), (i32::MIN, INVALID), (i32::MAX, OK)] {
        let request = pb::ScheduleSendRequest {
            contact_id: c.clone(),
            template_id: "t".into(),
            scheduled_for: time(4_000_000_000, 0),
            source: transactional,
            step,
            ..Default::default()
        };
        cases.push((
            format!("ScheduleSend step {step}"),
            Req::Schedule(request),
            code,
        ));
        let request = pb::UpdateEnrolmentRequest {
            contact_id: c.clone(),
            sequence_id: "seq".into(),
            current_step: Some(step),
            ..Default::default()
        };
        let what = format!("UpdateEnrolment step {step}");
        cases.push((what, Req::UpdateEnrolment(request), code));
    }
    let request = pb::UpdateEnrolmentRequest {
        contact_id: c.clone(),
        sequence_id: "seq".into(),
        status: 999,
        ..Default::default()
    };
    cases.push((
        "UpdateEnrolment status 999".into(),
        Req::UpdateEnrolment(request),
        INVALID,
    ));
    let request = pb::ScheduleSendRequest {
        contact_id: c.clone(),
        template_id: "t".into(),
        source: transactional,
        ..Default::default()
    };
    cases.push((
        "ScheduleSend without a time".into(),
        Req::Schedule(request),
        INVALID,
    ));
    cases
}

fn time_and_property_cases(f: &Fixture) -> Vec<(String, Req, Code)> {
    let c = f.contact.clone();
    let mut cases = Vec::new();
    for (what, at, code) in time_cases() {
        let track = pb::TrackEventRequest {
            subject: Some(Subject::ContactId(c.clone())),
            name: "timed".into(),
            occurred_at: at,
            ..Default::default()
        };
        cases.push((format!("TrackEvent at {what}"), Req::Track(track), code));
        let send = pb::RecordSendRequest {
            recipient: Some(Recipient::ContactId(c.clone())),
            template_id: "t".into(),
            source: pb::SendSource::Transactional as i32,
            occurred_at: at,
            ..Default::default()
        };
        cases.push((format!("RecordSend at {what}"), Req::RecordSend(send), code));
        let membership = pb::SetSegmentMembershipRequest {
            contact_id: c.clone(),
            segment_id: format!("timed-{what}"),
            member: true,
            occurred_at: at,
            ..Default::default()
        };
        let what = format!("SetSegmentMembership at {what}");
        cases.push((what, Req::Membership(membership), code));
    }
    for (i, (what, properties, code)) in property_cases().into_iter().enumerate() {
        let create = pb::CreateContactRequest {
            email: format!("props{i}@example.com"),
            properties: Some(properties.clone()),
            ..Default::default()
        };
        cases.push((
            format!("CreateContact with {what}"),
            Req::Create(create),
            code,
        ));
        let update = pb::UpdateContactRequest {
            id: c.clone(),
            email: None,
            properties: Some(properties.clone()),
            ..Default::default()
        };
        cases.push((
            format!("UpdateContact with {what}"),
            Req::Update(update),
            code,
        ));
        let track = pb::TrackEventRequest {
            subject: Some(Subject::ContactId(c.clone())),
            name: "props".into(),
            properties: Some(properties),
            ..Default::default()
        };
        cases.push((format!("TrackEvent with {what}"), Req::Track(track), code));
    }
    for (what, email, code) in email_cases() {
        cases.push((format!("CreateContact {what}"), Req::create(&email), code));
    }
    cases
}

async fn non_string_hostile_values_get_their_documented_codes(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut clients = (app.client(), app.activity());
    let f = fixture(&mut clients).await;
    let other = fixture(&mut clients).await;
    let foreign_key = app.other_tenant_key().await;
    let mut foreign_clients = (
        app.client_with_key(Some(&foreign_key)),
        app.activity_with_key(&foreign_key),
    );
    let foreign = fixture(&mut foreign_clients).await;
    let tenant = tenant_of(&app).await;
    let mut cases = number_cases(&f);
    cases.extend(time_and_property_cases(&f));
    cases.extend(cursor_cases(&f, &other.contact, &foreign));
    let signing = crate::support::storage::Storage::open(&app)
        .await
        .cursor_key()
        .await;
    cases.extend(forged_cases(&tenant, &f.contact, &signing));
    let tried = cases.len();
    for (what, request, code) in cases {
        if code == EITHER {
            let result = crate::support::requests::send(&mut clients, request).await;
            if let Err(status) = &result {
                assert_eq!(status.code(), INVALID, "{what}: {status:?}");
                crate::support::assert_clean_message(status, &app.key, &what);
            }
            continue;
        }
        let _ = check(&mut clients, &app, &what, request, code).await;
    }
    println!("hostile value cases tried: {tried}");
}

/// The tenant of the app's key (the bootstrap tenant).
async fn tenant_of(app: &crate::support::TestApp) -> TenantId {
    let hash = kraiter_contacts::domain::hash_api_key(&app.key);
    app.store
        .tenant_for_key(&hash)
        .await
        .expect("look up the key")
        .expect("the key is live")
}

conformance!(non_string_hostile_values_get_their_documented_codes);
