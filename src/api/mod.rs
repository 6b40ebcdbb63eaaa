//! The gRPC edge: generated types, services, authentication, status mapping and
//! page streaming. Handlers convert, call the store, convert back.

mod activity;
mod auth;
mod contacts;
pub mod convert;
mod convert_activity;
mod edge;
mod error;
#[cfg(test)]
mod fuzz;
mod rate_limit;
mod stream;
pub mod wire;

use std::future::Future;
use std::time::Instant;

use tonic::metadata::MetadataMap;
use tonic::{Response, Status};
use tracing::{Instrument, field};

pub use activity::ActivityApi;
pub use auth::Authenticator;
pub use contacts::ContactsApi;
pub use edge::EdgeLayer;
pub use error::{ApiError, ERROR_DOMAIN};
pub use rate_limit::{Gate, RateLimiter};

use crate::store::{Checked, KeyClaim};

/// Code generated from `proto/` by build.rs.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kraiter.contacts.v1");

    /// Descriptor set served by the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("kraiter_contacts_descriptor");
}

/// Runs one RPC: authenticates and rate-limits, then calls `handler` with the tenant,
/// inside a span that records method, tenant, status code and latency. Never logs keys
/// or values.
pub(crate) async fn handle<T, F, Fut>(
    auth: &Gate,
    method: &'static str,
    metadata: &MetadataMap,
    handler: F,
) -> Result<Response<T>, Status>
where
    F: FnOnce(crate::domain::TenantId) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    instrumented(method, async move {
        let tenant = auth.admit(metadata).await?;
        tracing::Span::current().record("tenant", tenant.as_str());
        // Streams spawned by the handler count their messages under this method.
        stream::RPC_METHOD.scope(method, handler(tenant)).await
    })
    .await
}

/// `handle` for the hot unary calls, whose store statement checks the key itself:
/// `handler` gets a `KeyClaim` and returns the store's `Checked` outcome, so the key
/// check costs no round trip of its own (see `auth`).
pub(crate) async fn handle_claimed<T, F, Fut>(
    auth: &Gate,
    method: &'static str,
    metadata: &MetadataMap,
    handler: F,
) -> Result<Response<T>, Status>
where
    F: FnOnce(KeyClaim) -> Fut,
    Fut: Future<Output = Result<Checked<T>, ApiError>>,
{
    instrumented(method, async move {
        let claim = auth.admit_claim(metadata).await?;
        tracing::Span::current().record("tenant", claim.tenant.as_str());
        let outcome = stream::RPC_METHOD
            .scope(method, handler(claim.clone()))
            .await;
        auth.settle(&claim, outcome).await
    })
    .await
}

/// Runs `call` inside the RPC's span, then records its latency and status.
async fn instrumented<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let span = tracing::info_span!(
        "rpc",
        method,
        tenant = field::Empty,
        code = field::Empty,
        latency_us = field::Empty
    );
    let started = Instant::now();
    async move {
        let result = call.await;
        let span = tracing::Span::current();
        let elapsed = started.elapsed();
        span.record("latency_us", elapsed.as_micros() as u64);
        crate::metrics::record_rpc(
            method,
            result
                .as_ref()
                .map_or_else(ApiError::code, |_| tonic::Code::Ok),
            elapsed,
        );
        match result {
            Ok(value) => {
                span.record("code", "OK");
                // Debug, not info: a line per successful call costs a formatted write
                // per call (~6 % of a GetContact's server CPU); metrics count them.
                tracing::debug!("rpc completed");
                Ok(Response::new(value))
            }
            Err(err) => {
                span.record("code", field::debug(err.code()));
                tracing::info!(reason = err.reason(), "rpc failed");
                Err(Status::from(err))
            }
        }
    }
    .instrument(span)
    .await
}
