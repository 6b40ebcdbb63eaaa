//! Request ids after erasure and after their retention window: a retry that arrives
//! after DeleteContact erased the contact is refused (never a re-creation of the
//! person), and remembered requests and their tombstones are purged once older than
//! `--request-id-retention`.

use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use pb::record_send_request::Recipient;
use pb::track_event_request::Subject;
use sha2::Digest;
use tonic::Code;

use crate::conformance;
use crate::support::storage::Storage;
use crate::support::{Backend, TestApp, spawn_app, spawn_app_with};

/// What a row is found by: a request id (text) or its hash (bytes).
#[derive(Clone, Copy)]
enum Key<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// Rows of `table` whose `column` is `key`, read straight from the app's database.
async fn rows(app: &TestApp, table: &str, column: &str, key: Key<'_>) -> i64 {
    let sql = format!("SELECT count(*) FROM {table} WHERE {column} = $1");
    let mut storage = Storage::open(app).await;
    match key {
        Key::Text(text) => storage.count(&sql, &[text]).await,
        Key::Bytes(bytes) => storage.count_bytes(&sql, bytes).await,
    }
}

fn hash(request_id: &str) -> Vec<u8> {
    sha2::Sha256::digest(request_id.as_bytes()).to_vec()
}

fn send_by_email(request_id: &str, email: &str) -> pb::RecordSendRequest {
    pb::RecordSendRequest {
        request_id: request_id.to_owned(),
        recipient: Some(Recipient::Email(email.to_owned())),
        template_id: "welcome".into(),
        template_name: "Welcome".into(),
        subject: "Hi".into(),
        source: pb::SendSource::Transactional as i32,
        ..Default::default()
    }
}

async fn a_retry_after_the_contact_was_erased_is_refused_not_recreated(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut activity, mut client) = (app.activity(), app.client());
    let email = format!("erased-{}@example.com", ulid::Ulid::new());
    let request_id = format!("req-{}", ulid::Ulid::new());
    let first = activity
        .record_send(send_by_email(&request_id, &email))
        .await
        .expect("the first send creates the contact")
        .into_inner();
    client
        .delete_contact(pb::DeleteContactRequest {
            id: first.contact_id.clone(),
            ..Default::default()
        })
        .await
        .expect("erase the contact");

    let retry = activity
        .record_send(send_by_email(&request_id, &email))
        .await;
    assert_eq!(
        retry.expect_err("a retry after the erasure").code(),
        Code::NotFound,
        "the retry is refused"
    );
    let found = client
        .get_contact_by_email(pb::GetContactByEmailRequest {
            email: email.clone(),
        })
        .await
        .expect("look the address up")
        .into_inner();
    assert_eq!(found.contact, None, "the person was not created again");
    // What is kept is the id's hash, not the id (it may name the person).
    assert_eq!(
        rows(
            &app,
            "erased_requests",
            "request_hash",
            Key::Bytes(&hash(&request_id))
        )
        .await,
        1
    );
    assert_eq!(
        rows(
            &app,
            "idempotency_keys",
            "request_id",
            Key::Text(&request_id)
        )
        .await,
        0
    );

    // The same for an event by email.
    let event_id = format!("evt-req-{}", ulid::Ulid::new());
    let event = |id: &str| pb::TrackEventRequest {
        request_id: id.to_owned(),
        subject: Some(Subject::Email(email.clone())),
        name: "signed_up".into(),
        ..Default::default()
    };
    let tracked = activity
        .track_event(event(&event_id))
        .await
        .expect("track")
        .into_inner();
    client
        .delete_contact(pb::DeleteContactRequest {
            id: tracked.contact_id,
            ..Default::default()
        })
        .await
        .expect("erase again");
    let retry = activity.track_event(event(&event_id)).await;
    assert_eq!(
        retry.expect_err("an event retried after erasure").code(),
        Code::NotFound
    );
}

/// Polls `rows` until it is zero or 15 s pass; returns the last count.
async fn until_purged(app: &TestApp, table: &str, column: &str, key: Key<'_>) -> i64 {
    let started = Instant::now();
    loop {
        let left = rows(app, table, column, key).await;
        if left == 0 || started.elapsed() > Duration::from_secs(15) {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn request_ids_are_forgotten_after_the_retention_window(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        args.limits.request_id_retention = Duration::from_secs(1);
    })
    .await;
    let (mut activity, mut client) = (app.activity(), app.client());
    let contact = client
        .create_contact(pb::CreateContactRequest {
            email: format!("kept-{}@example.com", ulid::Ulid::new()),
            properties: None,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .id;
    let request_id = format!("req-{}", ulid::Ulid::new());
    let event = || pb::TrackEventRequest {
        request_id: request_id.clone(),
        subject: Some(Subject::ContactId(contact.clone())),
        name: "visited".into(),
        ..Default::default()
    };
    let first = activity
        .track_event(event())
        .await
        .expect("track")
        .into_inner();
    let replayed = activity
        .track_event(event())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(
        first, replayed,
        "within the window a retry replays the first answer"
    );
    assert_eq!(
        until_purged(
            &app,
            "idempotency_keys",
            "request_id",
            Key::Text(&request_id)
        )
        .await,
        0,
        "the remembered request is purged after the window"
    );
    let again = activity
        .track_event(event())
        .await
        .expect("track again")
        .into_inner();
    assert_ne!(
        again.entry.map(|e| e.id),
        first.entry.map(|e| e.id),
        "after the window the same id is a new request"
    );

    // Tombstones expire the same way.
    let erased = format!("req-{}", ulid::Ulid::new());
    let email = format!("gone-{}@example.com", ulid::Ulid::new());
    let sent = activity
        .record_send(send_by_email(&erased, &email))
        .await
        .expect("send")
        .into_inner();
    client
        .delete_contact(pb::DeleteContactRequest {
            id: sent.contact_id,
            ..Default::default()
        })
        .await
        .expect("erase");
    assert_eq!(
        until_purged(
            &app,
            "erased_requests",
            "request_hash",
            Key::Bytes(&hash(&erased))
        )
        .await,
        0,
        "the tombstone is purged after the window"
    );
}

conformance!(
    a_retry_after_the_contact_was_erased_is_refused_not_recreated,
    request_ids_are_forgotten_after_the_retention_window,
);
