//! Bytes that do not decode as the request message (invalid UTF-8 in a string,
//! nesting past prost's recursion limit, truncated or garbage frames) get what every
//! gRPC stack answers, INTERNAL (or UNIMPLEMENTED for an unknown method); the server
//! stays up and keeps serving.

use tonic::Code;

use crate::conformance;
use crate::support::raw::{self, field, frame};
use crate::support::requests::{Req, every_rpc, fixture, send};
use crate::support::{Backend, spawn_app};

/// A Struct nested `depth` times inside `properties` (field 2 of CreateContactRequest
/// and field 5 of TrackEventRequest): Struct.fields{"k": Value{struct_value: ...}}.
fn deep_struct(depth: usize) -> Vec<u8> {
    let mut value = field(3, b"leaf"); // Value.string_value
    for _ in 0..depth {
        let entry = [field(1, b"k"), field(2, &value)].concat(); // map entry
        let strukt = field(1, &entry); // Struct.fields
        value = field(5, &strukt); // Value.struct_value
    }
    // `value` is a Value; unwrap its struct_value into the Struct itself.
    let entry = [field(1, b"k"), field(2, &value)].concat();
    field(1, &entry)
}

async fn undecodable_requests_are_internal_and_the_server_stays_up(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut clients = (app.client(), app.activity());
    let f = fixture(&mut clients).await;
    let auth = format!("Bearer {}", app.key);
    let headers = [("authorization", auth.as_str())];
    let invalid_utf8: &[u8] = &[b'a', 0xff, 0xfe, 0xc0, 0x80];
    let mut cases: Vec<(String, &'static str, Vec<u8>, Code)> = Vec::new();
    for request in every_rpc(&f) {
        let path = request.path();
        let mut body = request.encode();
        // Field 1 is a string in every request; a repeated field's last value wins.
        body.extend(field(1, invalid_utf8));
        cases.push((
            format!("{path}: invalid UTF-8"),
            path,
            frame(&body),
            Code::Internal,
        ));
        let mut wrong_type = request.encode();
        wrong_type.extend([0x08, 0x01]); // field 1 as a varint
        cases.push((
            format!("{path}: wrong wire type"),
            path,
            frame(&wrong_type),
            Code::Internal,
        ));
        cases.push((
            format!("{path}: garbage"),
            path,
            frame(&[0xff; 16]),
            Code::Internal,
        ));
        cases.push((
            format!("{path}: truncated field"),
            path,
            frame(&[0x0a, 100, b'a', b'b']),
            Code::Internal,
        ));
        let whole = frame(&request.encode());
        cases.push((
            format!("{path}: truncated frame"),
            path,
            whole[..whole.len().saturating_sub(1).max(3)].to_vec(),
            Code::Internal,
        ));
        // A request stream of no messages is a valid, empty import.
        let empty = if request.streams_requests() {
            Code::Ok
        } else {
            Code::Internal
        };
        cases.push((format!("{path}: no message"), path, Vec::new(), empty));
        let mut compressed = frame(&request.encode());
        compressed[0] = 1; // compressed, but no grpc-encoding was announced
        cases.push((
            format!("{path}: bogus compression flag"),
            path,
            compressed,
            Code::Internal,
        ));
    }
    let create = "/kraiter.contacts.v1.ContactsService/CreateContact";
    let track = "/kraiter.contacts.v1.ActivityService/TrackEvent";
    let email = field(1, b"deep@example.com");
    for (depth, code) in [(20, Code::InvalidArgument), (200, Code::Internal)] {
        let body = [email.clone(), field(2, &deep_struct(depth))].concat();
        cases.push((
            format!("CreateContact nested {depth} deep"),
            create,
            frame(&body),
            code,
        ));
        let subject = field(2, f.contact.as_bytes());
        let body = [subject, field(4, b"deep"), field(5, &deep_struct(depth))].concat();
        cases.push((
            format!("TrackEvent nested {depth} deep"),
            track,
            frame(&body),
            code,
        ));
    }
    let key_with_bad_utf8 = field(
        1,
        &[field(1, invalid_utf8), field(2, &field(4, &[1]))].concat(),
    );
    let body = [email.clone(), field(2, &key_with_bad_utf8)].concat();
    cases.push((
        "property key of invalid UTF-8".into(),
        create,
        frame(&body),
        Code::Internal,
    ));
    for (path, code) in [
        (
            "/kraiter.contacts.v1.ContactsService/NoSuchMethod",
            Code::Unimplemented,
        ),
        (
            "/kraiter.contacts.v1.NoSuchService/Get",
            Code::Unimplemented,
        ),
    ] {
        cases.push((format!("{path}: unknown"), path, frame(&email), code));
    }
    let tried = cases.len();
    for (what, path, body, code) in cases {
        let reply = raw::call(app.addr, path, &headers, body).await;
        assert_eq!(reply.code, code, "{what}: {reply:?}");
        crate::support::assert_clean_message(
            &tonic::Status::new(reply.code, reply.message),
            &app.key,
            &what,
        );
    }
    println!("wire-level cases tried: {tried}");
    // Every RPC still works afterwards, on the same server.
    let f = fixture(&mut clients).await;
    for request in every_rpc(&f) {
        let what = request.path();
        send(&mut clients, request)
            .await
            .unwrap_or_else(|status| panic!("{what} after the hostile bytes: {status:?}"));
    }
}

async fn a_valid_request_over_the_raw_client_succeeds(backend: Backend) {
    // The raw client itself is sound: a well-formed call through it is OK.
    let app = spawn_app(backend).await;
    let auth = format!("Bearer {}", app.key);
    let request = Req::create("raw@example.com");
    let reply = raw::call(
        app.addr,
        request.path(),
        &[("authorization", auth.as_str())],
        frame(&request.encode()),
    )
    .await;
    assert_eq!(reply.code, Code::Ok, "{reply:?}");
    assert_eq!(reply.messages.len(), 1, "one Contact");
}

conformance!(
    undecodable_requests_are_internal_and_the_server_stays_up,
    a_valid_request_over_the_raw_client_succeeds,
);
