//! The gRPC edge: generated types, services, authentication, status mapping and
//! page streaming. Handlers convert, call the store, convert back.

mod activity;
mod auth;
pub mod consistency;
mod contacts;
pub mod convert;
mod convert_activity;
mod cursors;
mod edge;
mod error;
pub mod filter;
#[cfg(test)]
mod fuzz;
mod rate_limit;
mod stream;
pub(crate) mod wire;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use tonic::{Response, Status};
use tracing::{Instrument, field};

pub use activity::ActivityApi;
pub use auth::AccessControl;
pub(crate) use auth::Credentials;
pub use contacts::ContactsApi;
pub use edge::EdgeLayer;
pub use error::{ApiError, ERROR_DOMAIN};
pub use rate_limit::RateLimiter;
pub use stream::{StreamLimits, Streams};

use crate::store::Access;

/// Code generated from `proto/` by build.rs.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kraiter.contacts.v1");

    /// Descriptor set served by the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("kraiter_contacts_descriptor");
}

/// Runs one RPC: authenticates and rate-limits, then calls `handler` with the tenant,
/// and logs the outcome with method, tenant, status code and latency (`instrumented`).
/// Never logs keys or values.
pub(crate) async fn handle<T, F, Fut>(
    auth: &AccessControl,
    method: &'static str,
    credentials: &Credentials<'_>,
    handler: F,
) -> Result<Response<T>, Status>
where
    F: FnOnce(crate::domain::TenantId) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    handle_stream(auth, method, credentials, |access| handler(access.tenant)).await
}

/// `handle` for streamed lists: `handler` gets the caller's `Access` with its key, so
/// that the stream can check the key again while it runs (`stream.rs`).
pub(crate) async fn handle_stream<T, F, Fut>(
    auth: &AccessControl,
    method: &'static str,
    credentials: &Credentials<'_>,
    handler: F,
) -> Result<Response<T>, Status>
where
    F: FnOnce(Access) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let tenant = OnceLock::new();
    instrumented(method, credentials, &tenant, async {
        let admitted = auth.authorize(credentials).await?;
        remember_tenant(&tenant, admitted.tenant.as_str());
        // Streams spawned by the handler count their messages under this method.
        stream::RPC_METHOD.scope(method, handler(admitted)).await
    })
    .await
}

/// `handle` for the hot unary calls, whose store statement checks the key itself:
/// `handler` gets an `Access` with the key, so the check costs no round trip of its
/// own (see `auth`).
pub(crate) async fn handle_with_key<T, F, Fut>(
    auth: &AccessControl,
    method: &'static str,
    credentials: &Credentials<'_>,
    handler: F,
) -> Result<Response<T>, Status>
where
    F: FnOnce(Access) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let tenant = OnceLock::new();
    instrumented(method, credentials, &tenant, async {
        let access = auth.authorize_in_store(credentials).await?;
        remember_tenant(&tenant, access.tenant.as_str());
        let outcome = stream::RPC_METHOD
            .scope(method, handler(access.clone()))
            .await;
        auth.conclude(&access, outcome).await
    })
    .await
}

/// Keeps the caller's tenant for the outcome's log line, and names it in the call's
/// span (which exists only when debug logging is on).
fn remember_tenant(cell: &OnceLock<String>, tenant: &str) {
    let _ = cell.set(tenant.to_owned());
    tracing::Span::current().record("tenant", tenant);
}

/// Runs `call`, then records its latency and status: in the metrics always, and in
/// one log line (`info` for failures, `debug` for successes) under an `rpc` span with
/// method, tenant, code and latency. During the call the span is a `debug` one: an
/// enabled span costs its registration, an enter and exit per poll and formatting
/// each recorded field, a visible share of a point read's server CPU (BENCHMARKS.md),
/// for context only debug events use. With `--otlp-endpoint` the same span is the
/// call's exported server span (`telemetry.rs`): method, tenant and gRPC code, never
/// the key or a value.
async fn instrumented<T>(
    method: &'static str,
    credentials: &Credentials<'_>,
    tenant: &OnceLock<String>,
    call: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let span = tracing::debug_span!(
        target: crate::telemetry::CALL_SPAN_TARGET,
        "rpc",
        method,
        tenant = field::Empty,
        otel.name = field::Empty,
        otel.kind = field::Empty,
        otel.status_code = field::Empty,
        rpc.system = field::Empty,
        rpc.service = field::Empty,
        rpc.grpc.status_code = field::Empty,
    );
    let exporting = crate::telemetry::exporting();
    if exporting {
        crate::telemetry::start_call_span(&span, credentials.metadata, credentials.path.as_ref());
    }
    let mut call = std::pin::pin!(call.instrument(span));
    let result = call.as_mut().await;
    let elapsed = started.elapsed();
    let code = result
        .as_ref()
        .map_or_else(ApiError::code, |_| tonic::Code::Ok);
    if exporting {
        crate::telemetry::end_call_span(call.span(), code);
    }
    crate::metrics::record_rpc(method, code, elapsed);
    let outcome = |code: &str| {
        tracing::info_span!(
            "rpc",
            method,
            tenant = tenant.get().map(String::as_str),
            code = field::display(code),
            latency_us = elapsed.as_micros() as u64
        )
    };
    match result {
        Ok(value) => {
            // Debug, not info: a line per successful call costs a formatted write
            // per call; metrics count them.
            if tracing::enabled!(tracing::Level::DEBUG) {
                let _span = outcome("OK").entered();
                tracing::debug!("rpc completed");
            }
            Ok(Response::new(value))
        }
        Err(err) => {
            let _span = outcome(&format!("{code:?}")).entered();
            tracing::info!(reason = err.reason().as_str(), "rpc failed");
            // Inside the span: an INTERNAL or UNAVAILABLE logs its cause here.
            Err(Status::from(err))
        }
    }
}
