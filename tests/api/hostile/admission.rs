//! Calls the server refuses cost the database nothing: a tenant over its rate limit,
//! a key rejected before, and a flood of unknown keys from one peer are answered
//! while the pool's only connection is held by a write blocked on a row lock. Code
//! that asked the database first would wait for that connection and time out.

use std::time::{Duration, Instant};

use futures::future::join_all;
use kraiter_contacts::api::pb;
use tonic::Code;

use crate::support::locks::{self, WriteLock};
use crate::support::{Backend, Client, TestApp, spawn_app_with};

/// How long a refused call may take; a call that waits for the held connection runs
/// into its deadline (`DEADLINE`) instead.
const PROMPT: Duration = Duration::from_millis(900);
const DEADLINE: Duration = Duration::from_millis(1500);

/// An app whose pool has one connection, with `configure` applied on top.
async fn one_connection_app(
    configure: impl FnOnce(&mut kraiter_contacts::config::ServeArgs),
) -> TestApp {
    spawn_app_with(Backend::Postgres, |args| {
        args.store.db_max_connections = 1;
        args.store.db_acquire_timeout = Duration::from_secs(3);
        configure(args);
    })
    .await
}

/// Holds the pool's only connection: locks a fresh contact's row from outside the
/// server, then has the server update that contact, which waits on the lock. Returns
/// the lock (release it to let everything go) and the update's task.
async fn hold_the_pool(
    app: &TestApp,
    client: &mut Client,
) -> (
    WriteLock,
    tokio::task::JoinHandle<Result<(), tonic::Status>>,
) {
    let created = client
        .create_contact(pb::CreateContactRequest {
            email: format!("held-{}@example.com", ulid::Ulid::new()),
            properties: None,
            ..Default::default()
        })
        .await
        .expect("create the contact to lock")
        .into_inner();
    let mut lock = locks::hold(app, &created.id).await;
    let mut updater = client.clone();
    let update = tokio::spawn(async move {
        updater
            .update_contact(pb::UpdateContactRequest {
                id: created.id,
                email: Some(format!("moved-{}@example.com", ulid::Ulid::new())),
                properties: None,
                ..Default::default()
            })
            .await
            .map(drop)
    });
    // Once the server's statement waits on the lock, it holds the only connection.
    lock.wait_for_waiter(app, "the held update").await;
    (lock, update)
}

/// Runs `calls` at once, each with the test's deadline; returns how many were refused
/// with `code` within `PROMPT`, and every outcome for the failure message.
async fn refused_promptly<F, Fut>(calls: usize, code: Code, call: F) -> (usize, Vec<String>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let outcomes = join_all((0..calls).map(|i| {
        let call = call(i);
        async move {
            let started = Instant::now();
            let result = call.await;
            (result, started.elapsed())
        }
    }))
    .await;
    let prompt = outcomes
        .iter()
        .filter(|(result, took)| {
            matches!(result, Err(status) if status.code() == code) && *took < PROMPT
        })
        .count();
    let described = outcomes
        .iter()
        .map(|(result, took)| match result {
            Ok(()) => format!("ok in {took:?}"),
            Err(status) => format!("{:?} in {took:?}", status.code()),
        })
        .collect();
    (prompt, described)
}

fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(DEADLINE);
    request
}

async fn release(lock: WriteLock, update: tokio::task::JoinHandle<Result<(), tonic::Status>>) {
    lock.release().await;
    update
        .await
        .expect("the update task")
        .expect("the held update completes once the lock is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_limit_is_refused_without_database_work() {
    let app = one_connection_app(|args| {
        args.limits.rate_limit_rps = Some(1);
        args.limits.rate_limit_burst = Some(3);
    })
    .await;
    let mut client = app.client();
    let (lock, update) = hold_the_pool(&app, &mut client).await;
    // Two of the three tokens went to the create and the held update; at most one is
    // left (two, if a second passed), and every call past it is refused.
    let reads = |_| {
        let mut client = client.clone();
        async move {
            client
                .get_contact(with_deadline(pb::GetContactRequest {
                    id: "con_01J0000000000000000000000".into(),
                }))
                .await
                .map(drop)
        }
    };
    let (refused, outcomes) = refused_promptly(10, Code::ResourceExhausted, reads).await;
    assert!(
        refused >= 7,
        "GetContact over the limit answers RESOURCE_EXHAUSTED without the database: {outcomes:?}"
    );
    // A call whose key is looked up each time (not checked in the store's statement)
    // is charged before the lookup too.
    let segments = |_| {
        let mut client = client.clone();
        async move {
            client
                .list_contact_segments(with_deadline(pb::ListContactSegmentsRequest {
                    id: "con_01J0000000000000000000000".into(),
                }))
                .await
                .map(drop)
        }
    };
    let (refused, outcomes) = refused_promptly(10, Code::ResourceExhausted, segments).await;
    assert!(
        refused >= 8,
        "ListContactSegments over the limit answers RESOURCE_EXHAUSTED without a key lookup: {outcomes:?}"
    );
    release(lock, update).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_unknown_keys_are_refused_without_database_work() {
    let app = one_connection_app(|args| args.limits.unknown_key_lookups_rps = 1).await;
    let (key_id, revoked) =
        kraiter_contacts::keys::create(app.store.as_ref(), &crate::support::unique_tenant())
            .await
            .expect("create a key");
    assert!(app.store.revoke_api_key(&key_id).await.expect("revoke"));
    let mut revoked_client = app.client_with_key(Some(&revoked));
    let first = revoked_client
        .get_contact(pb::GetContactRequest {
            id: "con_01J0000000000000000000000".into(),
        })
        .await;
    assert_eq!(first.expect_err("revoked").code(), Code::Unauthenticated);

    let mut client = app.client();
    let (lock, update) = hold_the_pool(&app, &mut client).await;

    let again = |_| {
        let mut client = revoked_client.clone();
        async move {
            client
                .get_contact(with_deadline(pb::GetContactRequest {
                    id: "con_01J0000000000000000000000".into(),
                }))
                .await
                .map(drop)
        }
    };
    let (refused, outcomes) = refused_promptly(3, Code::Unauthenticated, again).await;
    assert_eq!(
        refused, 3,
        "a key rejected before is refused from memory: {outcomes:?}"
    );

    // A burst of 10 lookups per peer, 3 of them spent (the bootstrap key, the
    // revoked key, the key of this test's client): of 30 random keys at most 8 reach
    // the database (and wait for it), the rest are refused at once.
    let guesses = |i| {
        let mut client = app.client_with_key(Some(&format!("kr_guess{i:04}{}", ulid::Ulid::new())));
        async move {
            client
                .list_contact_segments(with_deadline(pb::ListContactSegmentsRequest {
                    id: "con_01J0000000000000000000000".into(),
                }))
                .await
                .map(drop)
        }
    };
    let (refused, outcomes) = refused_promptly(30, Code::ResourceExhausted, guesses).await;
    assert!(
        refused >= 20,
        "a flood of unknown keys from one peer is refused without lookups: {outcomes:?}"
    );
    release(lock, update).await;
}
