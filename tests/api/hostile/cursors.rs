//! Cursors for the hostile-value table: every list's cursor on every list, garbage,
//! truncated, altered, padded, foreign, and cursors a tenant forged for itself.

use kraiter_contacts::api::pb;
use kraiter_contacts::domain::{CursorKey, CursorKind, PageCursor, TenantId};
use tonic::Code;

use crate::support::requests::{Fixture, Req};

const OK: Code = Code::Ok;
const INVALID: Code = Code::InvalidArgument;
/// OK or INVALID_ARGUMENT, as the backend decides (see `forged_cases`).
pub const EITHER: Code = Code::Unknown;

fn list(cursor: &str, limit: i32, max_pages: i32) -> Req {
    Req::List(pb::ListContactsRequest {
        cursor: cursor.into(),
        limit,
        max_pages,
        ..Default::default()
    })
}

/// Builds a list request from a contact id and a cursor.
type ListBuild = Box<dyn Fn(&str, &str) -> Req>;

/// Cursors of every list, each tried on every list.
pub fn cursor_cases(
    f: &Fixture,
    other_contact: &str,
    foreign: &Fixture,
) -> Vec<(String, Req, Code)> {
    let c = f.contact.clone();
    let lists: Vec<(&str, &str, ListBuild)> = vec![
        (
            "contacts",
            &f.contacts_cursor,
            Box::new(|_: &str, cursor: &str| list(cursor, 1, 1)),
        ),
        (
            "sends",
            &f.sends_cursor,
            Box::new(|id: &str, cursor: &str| {
                Req::Sends(pb::ListContactSendsRequest {
                    id: id.into(),
                    cursor: cursor.into(),
                    ..Default::default()
                })
            }),
        ),
        (
            "scheduled sends",
            &f.scheduled_cursor,
            Box::new(|id: &str, cursor: &str| {
                Req::Scheduled(pb::ListContactScheduledSendsRequest {
                    id: id.into(),
                    cursor: cursor.into(),
                    ..Default::default()
                })
            }),
        ),
        (
            "timeline",
            &f.timeline_cursor,
            Box::new(|id: &str, cursor: &str| {
                Req::Timeline(pb::ListContactTimelineRequest {
                    id: id.into(),
                    cursor: cursor.into(),
                    ..Default::default()
                })
            }),
        ),
    ];
    let foreign_cursors = [
        &foreign.contacts_cursor,
        &foreign.sends_cursor,
        &foreign.scheduled_cursor,
        &foreign.timeline_cursor,
    ];
    let mut cases = Vec::new();
    for (i, (name, own, build)) in lists.iter().enumerate() {
        let own = own.to_string();
        let mut flipped = own.clone().into_bytes();
        let mid = flipped.len() / 2;
        flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        cases.push((format!("{name}: own cursor"), build(&c, &own), OK));
        // Base64 padding is tolerated: some clients add it.
        let padded = format!("{own}==");
        cases.push((
            format!("{name}: own cursor, padded"),
            build(&c, &padded),
            OK,
        ));
        for (what, cursor) in [
            ("garbage", "not a cursor!".to_owned()),
            (
                "base64 of nothing useful",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
            ),
            ("truncated", own[..own.len() / 2].to_owned()),
            ("one character less", own[..own.len() - 1].to_owned()),
            ("altered", flipped),
            ("huge", "A".repeat(100_000)),
            ("another tenant's", foreign_cursors[i].clone()),
        ] {
            cases.push((
                format!("{name}: {what} cursor"),
                build(&c, &cursor),
                INVALID,
            ));
        }
        for (j, (other_name, other, _)) in lists.iter().enumerate() {
            if i != j {
                let what = format!("{name}: cursor of {other_name}");
                cases.push((what, build(&c, other), INVALID));
            }
        }
        if i > 0 {
            let what = format!("{name}: cursor of another contact");
            cases.push((what, build(other_contact, &own), INVALID));
        }
    }
    // A cursor of the same list with other filters.
    let searched = Req::List(pb::ListContactsRequest {
        cursor: f.contacts_cursor.clone(),
        search: "other".into(),
        ..Default::default()
    });
    cases.push((
        "contacts: cursor of another search".into(),
        searched,
        INVALID,
    ));
    let filtered = Req::Timeline(pb::ListContactTimelineRequest {
        id: c.clone(),
        cursor: f.timeline_cursor.clone(),
        types: vec!["email.sent".into()],
        ..Default::default()
    });
    cases.push(("timeline: cursor of other types".into(), filtered, INVALID));
    let reordered = Req::Timeline(pb::ListContactTimelineRequest {
        id: c,
        cursor: f.timeline_cursor.clone(),
        order: pb::TimelineOrder::OldestFirst as i32,
        ..Default::default()
    });
    cases.push((
        "timeline: cursor of the other order".into(),
        reordered,
        INVALID,
    ));
    cases
}

/// Cursors signed with the deployment's secret (`signing`, read from the database
/// as only an operator could) around keys the service would never issue: whatever
/// key they carry, they only reach the caller's own rows, a time out of the years 1
/// to 9999 is INVALID_ARGUMENT on both backends, and nothing is INTERNAL. Signed with
/// any other key, every one of them is refused.
pub fn forged_cases(
    tenant: &TenantId,
    contact: &str,
    signing: &CursorKey,
) -> Vec<(String, Req, Code)> {
    let mut cases = Vec::new();
    let guessed = CursorKey::from_bytes([0; 32]);
    let unsigned = PageCursor::new(CursorKind::Contacts, &["", ""], "con_0".to_owned());
    cases.push((
        "a cursor made without the deployment's secret".to_owned(),
        list(&unsigned.encode(tenant, &guessed), 0, 0),
        INVALID,
    ));
    let time_keys = [
        ("max micros", format!("{}|x", i64::MAX), INVALID),
        ("min micros", format!("{}|x", i64::MIN), INVALID),
        ("not a number", "abc|x".to_owned(), INVALID),
        ("no separator", "12345".to_owned(), INVALID),
        ("year 262143", "8210266876799999999|x".to_owned(), INVALID),
        ("year 9999", "253402300799000000|zzz".to_owned(), OK),
        ("epoch, odd id", "0|%_\\'".to_owned(), OK),
    ];
    for (what, key, code) in time_keys {
        let scheduled = PageCursor::new(CursorKind::ScheduledSends, &[contact], key.clone());
        cases.push((
            format!("forged scheduled-sends cursor: {what}"),
            Req::Scheduled(pb::ListContactScheduledSendsRequest {
                id: contact.into(),
                cursor: scheduled.encode(tenant, signing),
                ..Default::default()
            }),
            code,
        ));
        let parts = [contact, "newest"];
        let timeline = PageCursor::new(CursorKind::Timeline, &parts, key);
        cases.push((
            format!("forged timeline cursor: {what}"),
            Req::Timeline(pb::ListContactTimelineRequest {
                id: contact.into(),
                cursor: timeline.encode(tenant, signing),
                ..Default::default()
            }),
            code,
        ));
    }
    for (what, key) in [
        ("quote and wildcards", "con_' OR '1'='1 %_"),
        ("past every id", "zzzzzzzz"),
        ("empty key", ""),
    ] {
        let contacts = PageCursor::new(CursorKind::Contacts, &["", ""], key.to_owned());
        cases.push((
            format!("forged contacts cursor: {what}"),
            list(&contacts.encode(tenant, signing), 0, 0),
            if key.is_empty() { INVALID } else { OK },
        ));
        let sends = PageCursor::new(CursorKind::Sends, &[contact], key.to_owned());
        cases.push((
            format!("forged sends cursor: {what}"),
            Req::Sends(pb::ListContactSendsRequest {
                id: contact.into(),
                cursor: sends.encode(tenant, signing),
                ..Default::default()
            }),
            if key.is_empty() { INVALID } else { OK },
        ));
    }
    cases
}
