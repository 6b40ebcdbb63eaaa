//! Limits: request message size, concurrent streams per connection, request
//! timeouts and client deadlines.

use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use serde_json::json;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::conformance;
use crate::support::locks::{self, pool_goes_idle};
use crate::support::raw::{self, frame};
use crate::support::requests::Req;
use crate::support::{Backend, assert_status, create, props, spawn_app, spawn_app_with};

async fn messages_over_the_size_limit_are_resource_exhausted(backend: Backend) {
    let app = spawn_app_with(backend, |args| args.limits.max_message_size = 100 * 1024).await;
    let mut client = app.client();
    let big = props(json!({"a": "x".repeat(150_000)}));
    let result = client
        .create_contact(pb::CreateContactRequest {
            email: "big@example.com".into(),
            properties: Some(big.clone()),
            ..Default::default()
        })
        .await;
    let status = assert_status(
        result,
        Code::ResourceExhausted,
        "MESSAGE_TOO_LARGE",
        "150 kB message, 100 KiB limit",
    );
    assert!(status.message().contains("102400"), "{status:?}");
    // Compressed small, but over the limit once inflated: refused while inflating.
    let result = client
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .create_contact(pb::CreateContactRequest {
            email: "zip@example.com".into(),
            properties: Some(big),
            ..Default::default()
        })
        .await;
    assert_eq!(
        result.expect_err("gzip bomb").code(),
        Code::ResourceExhausted
    );
    // A frame header announcing 1 GiB is refused before anything is read.
    let auth = format!("Bearer {}", app.key);
    let mut header = vec![0];
    header.extend_from_slice(&(1u32 << 30).to_be_bytes());
    let reply = raw::call(
        app.addr,
        Req::create("x@example.com").path(),
        &[("authorization", &auth)],
        header,
    )
    .await;
    assert_eq!(reply.code, Code::ResourceExhausted, "{reply:?}");
    // Just under the limit decodes, and then it is the properties that are too big.
    let result = client
        .create_contact(pb::CreateContactRequest {
            email: "under@example.com".into(),
            properties: Some(props(json!({"a": "x".repeat(70_000)}))),
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        "VALIDATION_ERROR",
        "under the message limit",
    );
    create(&mut client, "after@example.com", json!({})).await;
}

async fn the_default_message_limit_is_four_mebibytes(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    for (size, code) in [
        (5 * 1024 * 1024, Code::ResourceExhausted),
        (3 * 1024 * 1024, Code::InvalidArgument),
    ] {
        let result = client
            .get_contact_by_email(pb::GetContactByEmailRequest {
                email: "e".repeat(size),
            })
            .await;
        assert_eq!(result.expect_err("refused").code(), code, "{size} bytes");
    }
}

async fn a_connection_gets_at_most_max_concurrent_streams(backend: Backend) {
    let app = spawn_app_with(backend, |args| args.limits.max_concurrent_streams = 3).await;
    // The limit is announced to every connection...
    assert_eq!(raw::max_concurrent_streams(app.addr).await, 3, "announced");
    let mut health = HealthClient::new(app.channel.clone());
    // ...and held to: health watches stay open, three of them fill the connection.
    let mut watches = Vec::new();
    for _ in 0..3 {
        let watch = health
            .watch(HealthCheckRequest::default())
            .await
            .expect("watch")
            .into_inner();
        watches.push(watch);
    }
    let mut client = app.client();
    let blocked = tokio::spawn(async move {
        client
            .get_contact_by_email(pb::GetContactByEmailRequest {
                email: "a@example.com".into(),
            })
            .await
    });
    // A fourth call on the same connection waits for a free stream: calls made after
    // it on a connection of their own are answered while it is still waiting.
    let mut other = app.client_on_own_connection().await;
    for n in 0..5 {
        other
            .get_contact_by_email(pb::GetContactByEmailRequest {
                email: format!("other{n}@example.com"),
            })
            .await
            .expect("a call on another connection");
        assert!(!blocked.is_finished(), "a fourth stream was let in");
    }
    // ...and goes through as soon as one closes.
    drop(watches.pop());
    let result = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("the waiting call proceeds")
        .expect("task");
    result.expect("the call succeeds");
}

async fn a_call_past_the_request_timeout_is_deadline_exceeded_and_writes_nothing(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        // Long enough that the setup calls finish on a loaded 2-core machine, short
        // enough that the blocked update visibly ends at the timeout.
        args.limits.request_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut client = app.client();
    let contact = create(&mut client, "slow@example.com", json!({"v": 1})).await;
    let lock = locks::hold(&app, &contact.id).await;
    let started = Instant::now();
    let result = client
        .update_contact(pb::UpdateContactRequest {
            id: contact.id.clone(),
            email: None,
            properties: Some(props(json!({"v": 2}))),
            ..Default::default()
        })
        .await;
    assert_status(
        result,
        Code::DeadlineExceeded,
        "DEADLINE_EXCEEDED",
        "blocked update",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ended at the timeout, not later: {:?}",
        started.elapsed()
    );
    lock.release().await;
    pool_goes_idle(&app, Duration::from_secs(10), "after the timed-out update").await;
    crate::support::assert_landed_whole_or_not_at_all(
        &mut client,
        &contact.id,
        json!({"v": 1}),
        json!({"v": 2}),
    )
    .await;
}

async fn an_expired_client_deadline_is_deadline_exceeded(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let contact = create(&mut client, "deadline@example.com", json!({})).await;
    let auth = format!("Bearer {}", app.key);
    // The raw client does not time out by itself: the status is the server's.
    let headers = [("authorization", auth.as_str()), ("grpc-timeout", "200m")];
    let lock = locks::hold(&app, &contact.id).await;
    let update = Req::Update(pb::UpdateContactRequest {
        id: contact.id.clone(),
        email: None,
        properties: Some(props(json!({"late": true}))),
        ..Default::default()
    });
    let started = Instant::now();
    let reply = raw::call(app.addr, update.path(), &headers, frame(&update.encode())).await;
    assert_eq!(reply.code, Code::DeadlineExceeded, "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    lock.release().await;
    // A deadline already past when the call arrives.
    let headers = [("authorization", auth.as_str()), ("grpc-timeout", "1n")];
    let reply = raw::call(app.addr, update.path(), &headers, frame(&update.encode())).await;
    assert_eq!(reply.code, Code::DeadlineExceeded, "{reply:?}");
    pool_goes_idle(&app, Duration::from_secs(10), "after the deadlines").await;
}

async fn a_client_deadline_also_ends_a_stream_mid_way(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    // Pages bigger than the HTTP/2 window, so the stream outlives its first page.
    for i in 0..12 {
        let filler = json!({"filler": "f".repeat(30_000)});
        create(&mut client, &format!("page{i}@example.com"), filler).await;
    }
    let auth = format!("Bearer {}", app.key);
    let headers = [("authorization", auth.as_str()), ("grpc-timeout", "300m")];
    let list = Req::List(pb::ListContactsRequest {
        limit: 1,
        ..Default::default()
    });
    let reply = raw::call_slowly(
        app.addr,
        list.path(),
        &headers,
        frame(&list.encode()),
        Duration::from_millis(600),
    )
    .await;
    assert_eq!(reply.code, Code::DeadlineExceeded, "{:?}", reply.message);
    assert!(
        !reply.messages.is_empty() && reply.messages.len() < 12,
        "some pages, then the deadline: {} pages",
        reply.messages.len()
    );
    pool_goes_idle(&app, Duration::from_secs(10), "after the cut stream").await;
}

conformance!(
    messages_over_the_size_limit_are_resource_exhausted,
    the_default_message_limit_is_four_mebibytes,
    a_connection_gets_at_most_max_concurrent_streams,
    a_call_past_the_request_timeout_is_deadline_exceeded_and_writes_nothing,
    an_expired_client_deadline_is_deadline_exceeded,
    a_client_deadline_also_ends_a_stream_mid_way,
);
