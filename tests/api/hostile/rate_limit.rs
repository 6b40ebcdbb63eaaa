//! Per-tenant rate limiting: a token bucket per tenant, off by default; over the
//! limit is RESOURCE_EXHAUSTED with `RetryInfo`.

use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::conformance;
use crate::support::requests::{every_rpc, fixture, send};
use crate::support::{Backend, TestApp, assert_status, spawn_app, spawn_app_with};

fn lookup() -> pb::GetContactByEmailRequest {
    pb::GetContactByEmailRequest {
        email: "nobody@example.com".into(),
    }
}

/// The calls the limit is checked on: a unary lookup, an ActivityService call, and a
/// stream (refused when it opens).
#[derive(Debug, Clone, Copy)]
enum Call {
    Lookup,
    Event,
    List,
}

async fn call(app: &TestApp, call: Call) -> Result<(), Status> {
    match call {
        Call::Lookup => app.client().get_contact_by_email(lookup()).await.map(drop),
        Call::Event => {
            let request = pb::TrackEventRequest {
                subject: Some(pb::track_event_request::Subject::Email(
                    "a@example.com".into(),
                )),
                name: "x".into(),
                ..Default::default()
            };
            app.activity().track_event(request).await.map(drop)
        }
        Call::List => {
            let request = pb::ListContactsRequest::default();
            app.client().list_contacts(request).await.map(drop)
        }
    }
}

/// Looks up until the tenant's bucket refuses a call: how many calls were let in, the
/// refusal's `RetryInfo` delay, and when the refused call was sent.
async fn spend(app: &TestApp, what: &str) -> (usize, Duration, Instant) {
    for spent in 0..100 {
        let sent = Instant::now();
        let Err(status) = call(app, Call::Lookup).await else {
            continue;
        };
        let status = assert_status(
            Err::<(), _>(status),
            Code::ResourceExhausted,
            "RATE_LIMITED",
            what,
        );
        let retry = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
            .unwrap_or_else(|| panic!("{what}: RetryInfo with a delay"));
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(1),
            "{what}: one token a second, next in {retry:?}"
        );
        return (spent, retry, sent);
    }
    panic!("{what}: 100 calls in a row were let in");
}

async fn a_tenant_over_its_rate_gets_resource_exhausted_with_retry_info(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        args.limits.rate_limit_rps = Some(1);
        args.limits.rate_limit_burst = Some(3);
    })
    .await;
    // The burst, and no more than the tokens that came back meanwhile: on a loaded
    // machine the burst may take over a second, so that is counted, not assumed away.
    let started = Instant::now();
    let (spent, _, _) = spend(&app, "the burst").await;
    let refilled = started.elapsed().as_secs() as usize + 1;
    assert!(
        (3..=3 + refilled).contains(&spent),
        "a burst of 3 plus at most {refilled} refilled, got {spent} calls"
    );

    // The bucket is the tenant's, across both services and for streams too: with the
    // bucket just spent, each is refused, unless the next token was due by then
    // (then the bucket is spent again and the call retried).
    for what in [Call::Event, Call::List] {
        let mut refused = false;
        for _ in 0..5 {
            let (_, retry, sent) = spend(&app, &format!("{what:?}")).await;
            match call(&app, what).await {
                Err(status) => {
                    let what = format!("{what:?} with the bucket spent");
                    assert_status(
                        Err::<(), _>(status),
                        Code::ResourceExhausted,
                        "RATE_LIMITED",
                        &what,
                    );
                    refused = true;
                    break;
                }
                Ok(()) => assert!(
                    sent.elapsed() >= retry,
                    "{what:?} let in {:?} after a refusal that said {retry:?}",
                    sent.elapsed()
                ),
            }
        }
        assert!(refused, "{what:?} is never rate limited");
    }

    // Another tenant has its own bucket.
    let mut other = app.other_tenant_client().await;
    other
        .get_contact_by_email(lookup())
        .await
        .expect("another tenant is not limited by the first");
    // Unauthenticated calls are refused before they can spend anyone's tokens.
    let result = app
        .client_with_key(Some("kr_wrong"))
        .get_contact_by_email(lookup())
        .await;
    assert_status(result, Code::Unauthenticated, "UNAUTHORISED", "bad key");
    // A client that waits the advertised delay is let in: the server computed it
    // when it refused, before the answer left, so the token is back when it ends.
    let (_, retry, _) = spend(&app, "before the advertised delay").await;
    tokio::time::sleep(retry).await;
    call(&app, Call::Lookup)
        .await
        .expect("a call after RetryInfo's delay");
}

async fn rate_limiting_is_off_by_default(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut clients = (app.client(), app.activity());
    let f = fixture(&mut clients).await;
    // Every RPC, many times at once, and nothing is RESOURCE_EXHAUSTED.
    let mut calls = 0;
    for _ in 0..10 {
        for request in every_rpc(&f) {
            if matches!(
                request,
                crate::support::requests::Req::Delete(_) | crate::support::requests::Req::Cancel(_)
            ) {
                continue;
            }
            let what = request.path();
            if let Err(status) = send(&mut clients, request).await {
                assert_ne!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
            }
            calls += 1;
        }
    }
    assert!(calls >= 150, "{calls} calls");
}

conformance!(
    a_tenant_over_its_rate_gets_resource_exhausted_with_retry_info,
    rate_limiting_is_off_by_default,
);
