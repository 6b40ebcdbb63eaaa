//! Per-tenant rate limiting: a token bucket per tenant, off by default; over the
//! limit is RESOURCE_EXHAUSTED with `RetryInfo`.

use std::time::Duration;

use kraiter_contacts::api::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::conformance;
use crate::support::requests::{every_rpc, fixture, send};
use crate::support::{Backend, assert_status, spawn_app, spawn_app_with};

fn lookup() -> pb::GetContactByEmailRequest {
    pb::GetContactByEmailRequest {
        email: "nobody@example.com".into(),
    }
}

async fn a_tenant_over_its_rate_gets_resource_exhausted_with_retry_info(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        // One token a second: the burst is spent long before a token comes back.
        args.limits.rate_limit_rps = Some(1);
        args.limits.rate_limit_burst = Some(3);
    })
    .await;
    let mut client = app.client();
    for i in 0..3 {
        client
            .get_contact_by_email(lookup())
            .await
            .unwrap_or_else(|status| panic!("call {i} of the burst: {status:?}"));
    }
    let status = assert_status(
        client.get_contact_by_email(lookup()).await,
        Code::ResourceExhausted,
        "RATE_LIMITED",
        "fourth call at once",
    );
    let retry = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "one token a second: {retry:?}"
    );
    // The bucket is the tenant's, across both services and for streams too.
    let mut activity = app.activity();
    let result = activity
        .track_event(pb::TrackEventRequest {
            subject: Some(pb::track_event_request::Subject::Email(
                "a@example.com".into(),
            )),
            name: "x".into(),
            ..Default::default()
        })
        .await;
    assert_status(result, Code::ResourceExhausted, "RATE_LIMITED", "activity");
    let result = client
        .list_contacts(pb::ListContactsRequest::default())
        .await;
    assert_status(result, Code::ResourceExhausted, "RATE_LIMITED", "a stream");
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
    // After the advertised delay, the tenant may call again.
    tokio::time::sleep(retry).await;
    client
        .get_contact_by_email(lookup())
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
