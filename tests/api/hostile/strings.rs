//! Hostile input, table-driven, over every RPC of both services: every string field
//! gets empty, blank, oversize, NUL, control, newline, emoji, SQL, wildcard, bidi,
//! replacement-character and long non-ASCII values; numbers, enums, timestamps,
//! properties and cursors get their own cases. Each case has its documented code;
//! none reaches INTERNAL, no message leaks a key, SQL or a stack trace, and the
//! server keeps serving.

use kraiter_contacts::api::pb;
use tonic::{Code, Status};

use crate::conformance;
use crate::hostile::fields::string_fields;
use crate::support::requests::{Req, fixture, send};
use crate::support::{Activity, Backend, Client, TestApp, assert_clean_message, spawn_app};

/// Classes of string a caller may send in any string field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Empty,
    Blank,
    Oversize,
    Nul,
    Control,
    Newline,
    Emoji,
    Sql,
    Wildcard,
    Bidi,
    Replacement,
    LongUnicode,
}

const CLASSES: [Class; 12] = [
    Class::Empty,
    Class::Blank,
    Class::Oversize,
    Class::Nul,
    Class::Control,
    Class::Newline,
    Class::Emoji,
    Class::Sql,
    Class::Wildcard,
    Class::Bidi,
    Class::Replacement,
    Class::LongUnicode,
];

fn value(class: Class) -> String {
    match class {
        Class::Empty => String::new(),
        Class::Blank => "   ".into(),
        // 1 MB: far over every field's limit, well under the message limit.
        Class::Oversize => "a".repeat(1_000_000),
        Class::Nul => "a\0b".into(),
        Class::Control => "a\u{7}\u{1b}[0m".into(),
        Class::Newline => "line\nbreak".into(),
        Class::Emoji => "💥🔥".into(),
        Class::Sql => "x'); DROP TABLE contacts; --".into(),
        Class::Wildcard => "%_\\".into(),
        Class::Bidi => "\u{202e}abc".into(),
        Class::Replacement => "\u{fffd}".into(),
        // 256 two-byte characters: at the limit of every free-text field.
        Class::LongUnicode => "é".repeat(256),
    }
}

/// What a field holds, which decides the code each class gets.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `con_`/`snd_`/`sch_` + ULID.
    Id,
    /// An id that may be empty (absent).
    OptionalId,
    Email,
    /// Free text that must not be blank (ids of other systems, names).
    RequiredText,
    /// Free text that may be empty.
    OptionalText,
    /// AIP-155 request id: only its limits are checked here, since a valid id is
    /// remembered and would turn later cases into replays.
    RequestId,
    Search,
    Cursor,
    TimelineType,
}

/// `valid` is the field's outcome with an acceptable value; `None` skips the class.
fn expected(kind: Kind, class: Class, valid: Code) -> Option<Code> {
    use Class::*;
    let invalid = Some(Code::InvalidArgument);
    match kind {
        Kind::Id | Kind::Email | Kind::TimelineType => invalid,
        Kind::OptionalId | Kind::Cursor => match class {
            Empty => Some(valid),
            _ => invalid,
        },
        Kind::RequiredText => match class {
            Empty | Blank | Oversize | Nul | Control | Newline => invalid,
            _ => Some(valid),
        },
        Kind::OptionalText | Kind::Search => match class {
            Oversize | Nul | Control | Newline => invalid,
            _ => Some(valid),
        },
        Kind::RequestId => match class {
            Oversize | Nul | Control | Newline => invalid,
            _ => None,
        },
    }
}

/// Runs one case and checks its code and message; returns the status for more checks.
pub async fn check(
    clients: &mut (Client, Activity),
    app: &TestApp,
    what: &str,
    request: Req,
    expect: Code,
) -> Result<(), Status> {
    let result = send(clients, request).await;
    let code = result.as_ref().err().map_or(Code::Ok, Status::code);
    assert_eq!(code, expect, "{what}: {result:?}");
    if let Err(status) = &result {
        assert_clean_message(status, &app.key, what);
    }
    result
}

async fn every_string_field_of_every_rpc_gets_its_documented_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut clients = (app.client(), app.activity());
    let f = fixture(&mut clients).await;
    let mut tried = 0;
    for (field, kind, valid, build) in string_fields(&f) {
        for class in CLASSES {
            let Some(expect) = expected(kind, class, valid) else {
                continue;
            };
            let what = format!("{field} = {class:?}");
            let _ = check(&mut clients, &app, &what, build(value(class)), expect).await;
            tried += 1;
        }
    }
    println!("hostile string cases tried: {tried}");
    assert!(tried >= 400, "the table shrank: {tried} cases");
    // Still serving, and the fixture is intact (nothing hostile touched it).
    let contact = send(
        &mut clients,
        Req::Get(pb::GetContactRequest { id: f.contact }),
    )
    .await;
    assert!(contact.is_ok(), "server still serves: {contact:?}");
}

conformance!(every_string_field_of_every_rpc_gets_its_documented_code);
