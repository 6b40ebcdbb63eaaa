//! `--metrics-listen`: the Prometheus endpoint serves request counts and latency
//! histograms by method and code, stream messages and pool usage.
//!
//! Metric families are process-wide, and tests run in parallel in one process, so the
//! checks are on presence and lower bounds, not exact counts.

use futures::StreamExt;
use kraiter_contacts::client::pb;

use crate::conformance;
use crate::support::metrics::{http_get, sample};
use crate::support::{Backend, spawn_app_with};

async fn the_metrics_endpoint_serves_rpc_stream_and_pool_metrics(backend: Backend) {
    let app = spawn_app_with(backend, |args| {
        args.metrics_listen = Some("127.0.0.1:0".parse().expect("an address"));
    })
    .await;
    let metrics = app.metrics_addr.expect("metrics were asked for");
    let contacts = app.sdk().contacts();
    for n in 0..3 {
        contacts
            .create(pb::CreateContactRequest {
                email: format!("m{n}@example.com"),
                properties: None,
                ..Default::default()
            })
            .await
            .expect("create");
    }
    let missing = contacts.get("con_01J00000000000000000000000").await;
    assert!(missing.is_err(), "an unknown id fails");
    let listed: Vec<_> = contacts
        .list(pb::ListContactsRequest {
            limit: 1,
            ..Default::default()
        })
        .collect()
        .await;
    assert_eq!(listed.len(), 3);

    let (status, body) = http_get(metrics, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        sample(
            &body,
            r#"kraiter_rpc_requests_total{method="CreateContact",code="OK"}"#
        ) >= 3.0
    );
    assert!(
        sample(
            &body,
            r#"kraiter_rpc_requests_total{method="GetContact",code="NotFound"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            &body,
            r#"kraiter_rpc_duration_seconds_count{method="CreateContact",code="OK"}"#
        ) >= 3.0
    );
    assert!(
        sample(
            &body,
            r#"kraiter_rpc_duration_seconds_bucket{le="+Inf",method="CreateContact",code="OK"}"#
        ) >= 3.0
    );
    assert!(
        sample(
            &body,
            r#"kraiter_stream_messages_sent_total{method="ListContacts"}"#
        ) >= 3.0,
        "one message per page"
    );
    assert!(sample(&body, "kraiter_db_pool_max_connections ") >= 1.0);
    assert!(sample(&body, r#"kraiter_db_pool_connections{state="idle"}"#) >= 0.0);
    assert!(sample(&body, r#"kraiter_db_pool_connections{state="in_use"}"#) >= 0.0);
    assert!(body.contains("# TYPE kraiter_rpc_duration_seconds histogram"));

    let (status, _) = http_get(metrics, "/elsewhere").await;
    assert!(status.contains("404"), "{status}");
}

conformance!(the_metrics_endpoint_serves_rpc_stream_and_pool_metrics);
