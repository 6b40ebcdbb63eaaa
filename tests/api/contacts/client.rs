//! `kraiter_contacts::client`: SDK-style calls, auto-paging streams that resume after
//! a broken connection, and errors typed by SDK code; retries through an outage in
//! `client/outage.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use kraiter_contacts::client::{
    Client, ClientError, ErrorReason, RetryPolicy, pb, properties, properties_json,
};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::Endpoint;

use crate::conformance;
use crate::support::{Backend, spawn_app};

async fn create(client: &Client, email: &str, props: serde_json::Value) -> pb::Contact {
    client
        .contacts()
        .create(pb::CreateContactRequest {
            email: email.to_owned(),
            properties: Some(properties(props)),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|err| panic!("create {email}: {err}"))
}

async fn client_reads_like_the_sdk_and_types_its_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.sdk();
    let contacts = client.contacts();
    let alice = create(
        &client,
        "Alice@Example.com",
        json!({"plan": "pro", "trial": true}),
    )
    .await;

    let got = contacts.get(&alice.id).await.expect("get");
    assert_eq!(got, alice, "get returns the created contact");
    let by_email = contacts
        .get_by_email("alice@example.COM")
        .await
        .expect("getByEmail");
    assert_eq!(by_email.map(|c| c.id), Some(alice.id.clone()));
    assert_eq!(
        contacts
            .get_by_email("nobody@example.com")
            .await
            .expect("getByEmail of an unknown address"),
        None,
        "an unknown address is None, not an error"
    );

    let updated = contacts
        .update(pb::UpdateContactRequest {
            id: alice.id.clone(),
            email: None,
            properties: Some(properties(json!({"plan": "enterprise", "trial": null}))),
            ..Default::default()
        })
        .await
        .expect("update");
    assert_eq!(
        serde_json::Value::Object(properties_json(updated.properties.as_ref())),
        json!({"plan": "enterprise"})
    );

    let cases: Vec<(&str, Result<pb::Contact, ClientError>, ErrorReason)> = vec![
        (
            "duplicate email",
            contacts
                .create(pb::CreateContactRequest {
                    email: "ALICE@example.com".into(),
                    properties: None,
                    ..Default::default()
                })
                .await,
            ErrorReason::Conflict,
        ),
        (
            "malformed id",
            contacts.get("nope").await,
            ErrorReason::ValidationError,
        ),
        (
            "unknown id",
            contacts.get("con_01J00000000000000000000000").await,
            ErrorReason::NotFound,
        ),
    ];
    for (what, result, code) in cases {
        let err = result.expect_err(what);
        assert_eq!(err.reason(), Some(code), "{what}: {err}");
    }
    match contacts.get("nope").await {
        Err(ClientError::Validation { field, .. }) => {
            assert_eq!(field.as_deref(), Some("id"), "the field is named")
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    let stranger = Client::new(app.channel.clone(), "kr_not_a_key").expect("a client");
    let err = stranger
        .contacts()
        .get(&alice.id)
        .await
        .expect_err("bad key");
    assert!(matches!(err, ClientError::Unauthorised { .. }), "{err:?}");

    contacts.delete(&alice.id).await.expect("delete");
    let err = contacts.get(&alice.id).await.expect_err("deleted");
    assert_eq!(err.reason(), Some(ErrorReason::NotFound));
}

async fn client_lists_follow_every_page_and_stop_at_max_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.sdk();
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(
            create(&client, &format!("page{n}@example.com"), json!({"n": n}))
                .await
                .id,
        );
    }
    let all: Vec<String> = client
        .contacts()
        .list(pb::ListContactsRequest {
            limit: 2,
            ..Default::default()
        })
        .map(|contact| contact.expect("a contact").id)
        .collect()
        .await;
    assert_eq!(all, ids, "four pages of two, in id order");
    let first_two_pages: Vec<_> = client
        .contacts()
        .list(pb::ListContactsRequest {
            limit: 2,
            max_pages: 2,
            ..Default::default()
        })
        .collect()
        .await;
    assert_eq!(first_two_pages.len(), 4, "max_pages stops the stream");

    let timeline: Vec<_> = client
        .contacts()
        .get_timeline(pb::ListContactTimelineRequest {
            id: ids[0].clone(),
            limit: 1,
            ..Default::default()
        })
        .collect()
        .await;
    assert_eq!(timeline.len(), 1, "one contact.created entry");
    let err = client
        .contacts()
        .list(pb::ListContactsRequest {
            limit: -1,
            ..Default::default()
        })
        .next()
        .await
        .expect("an item")
        .expect_err("a negative limit");
    assert_eq!(err.reason(), Some(ErrorReason::ValidationError));
}

/// A TCP proxy to the server whose connections can all be cut at once, the way a
/// restarting load balancer or a network fault cuts them.
struct CuttingProxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    cut: watch::Sender<u64>,
}

impl CuttingProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let connections = Arc::new(AtomicUsize::new(0));
        let (cut, cuts) = watch::channel(0u64);
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(upstream).await.expect("upstream");
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                    // Dropping both sockets cuts the connection mid-stream.
                });
            }
        });
        Self {
            addr,
            connections,
            cut,
        }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }
}

async fn a_list_resumes_from_its_last_cursor_when_the_connection_breaks(backend: Backend) {
    let app = spawn_app(backend).await;
    let setup = app.sdk();
    // Big enough contacts that the stream cannot fit in flow-control windows: the
    // cut must happen while pages are still to come.
    let padding = "x".repeat(2000);
    let mut ids = Vec::new();
    for n in 0..120 {
        let email = format!("resume{n:03}@example.com");
        ids.push(create(&setup, &email, json!({"padding": padding})).await.id);
    }
    let proxy = CuttingProxy::start(app.addr).await;
    let channel = Endpoint::from_shared(format!("http://{}", proxy.addr))
        .expect("uri")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect through the proxy");
    let client = Client::new(channel, &app.key).expect("a client");
    let mut stream = client.contacts().list(pb::ListContactsRequest {
        limit: 5,
        ..Default::default()
    });
    let mut seen = Vec::new();
    while let Some(contact) = stream.next().await {
        seen.push(contact.expect("the stream resumes instead of failing").id);
        if seen.len() == 10 {
            proxy.cut_all();
        }
    }
    assert!(
        proxy.connections.load(Ordering::SeqCst) >= 2,
        "the cut forced a reconnect"
    );
    assert_eq!(seen.len(), ids.len(), "every contact, none twice");
    assert_eq!(seen, ids, "in id order, as if nothing had happened");

    // The same cut without retries: the break is real, mid-stream, and retryable.
    let client = client.with_retry(RetryPolicy::none());
    let mut stream = client.contacts().list(pb::ListContactsRequest {
        limit: 5,
        ..Default::default()
    });
    let mut delivered = 0;
    let err = loop {
        match stream.next().await {
            Some(Ok(_)) => delivered += 1,
            Some(Err(err)) => break err,
            None => panic!("the stream ended after {delivered} contacts despite the cut"),
        }
        if delivered == 10 {
            proxy.cut_all();
        }
    };
    assert!(delivered < ids.len(), "cut after {delivered}");
    assert!(
        err.is_retryable(),
        "a broken connection is retryable: {err:?}"
    );
}

async fn client_upserts_and_batch_gets(backend: Backend) {
    let app = spawn_app(backend).await;
    let contacts = app.sdk().contacts();
    let (created, was_new) = contacts
        .upsert(pb::UpsertContactRequest {
            email: "Dana@Example.com".into(),
            properties: Some(properties(json!({"plan": "pro", "trial": true}))),
            ..Default::default()
        })
        .await
        .expect("upsert a new email");
    assert!(was_new, "the first upsert creates");
    let (merged, was_new) = contacts
        .upsert(pb::UpsertContactRequest {
            email: "dana@example.com".into(),
            properties: Some(properties(json!({"trial": null, "seats": 3}))),
            ..Default::default()
        })
        .await
        .expect("upsert the same email");
    assert!(!was_new, "the second merges");
    assert_eq!(merged.id, created.id);
    assert_eq!(
        serde_json::Value::Object(properties_json(merged.properties.as_ref())),
        json!({"plan": "pro", "seats": 3})
    );
    let err = contacts
        .upsert(pb::UpsertContactRequest {
            email: "not-an-email".into(),
            ..Default::default()
        })
        .await
        .expect_err("an invalid email");
    assert_eq!(err.reason(), Some(ErrorReason::ValidationError), "{err:?}");

    let other = create(&app.sdk(), "erin@example.com", json!({})).await;
    let absent = "con_01J00000000000000000000000";
    let batch = contacts
        .batch_get(
            [other.id.as_str(), absent],
            ["DANA@example.com", "nobody@example.com"],
        )
        .await
        .expect("batch get");
    let ids: Vec<&str> = batch.contacts.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [other.id.as_str(), created.id.as_str()]);
    assert_eq!(batch.contacts[1], merged, "as the upsert left it");
    assert_eq!(batch.missing, [absent, "nobody@example.com"]);
    let empty = contacts
        .batch_get(Vec::<String>::new(), Vec::<String>::new())
        .await
        .expect("an empty batch");
    assert!(empty.contacts.is_empty() && empty.missing.is_empty());
    match contacts.batch_get(["nope"], Vec::<String>::new()).await {
        Err(ClientError::Validation { field, .. }) => {
            assert_eq!(field.as_deref(), Some("ids[0]"), "the key is named")
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

mod outage;

conformance!(
    client_reads_like_the_sdk_and_types_its_errors,
    client_lists_follow_every_page_and_stop_at_max_pages,
    a_list_resumes_from_its_last_cursor_when_the_connection_breaks,
    client_upserts_and_batch_gets,
);
