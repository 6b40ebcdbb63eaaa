//! The gRPC edge: generated types, services, authentication, status mapping and
//! page streaming. Handlers convert, call the store, convert back.

mod activity;
mod auth;
mod contacts;
pub mod convert;
mod convert_activity;
mod error;
mod stream;

use std::future::Future;
use std::time::Instant;

use tonic::metadata::MetadataMap;
use tonic::{Response, Status};
use tracing::{Instrument, field};

pub use activity::ActivityApi;
pub use auth::Authenticator;
pub use contacts::ContactsApi;
pub use error::{ApiError, ERROR_DOMAIN};

/// Code generated from `proto/` by build.rs.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kraiter.contacts.v1");

    /// Descriptor set served by the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("kraiter_contacts_descriptor");
}

/// Runs one RPC: authenticates, then calls `handler` with the tenant, inside a span
/// that records method, tenant, status code and latency. Never logs keys or values.
pub(crate) async fn handle<T, F, Fut>(
    auth: &Authenticator,
    method: &'static str,
    metadata: &MetadataMap,
    handler: F,
) -> Result<Response<T>, Status>
where
    F: FnOnce(crate::domain::TenantId) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let span = tracing::info_span!(
        "rpc",
        method,
        tenant = field::Empty,
        code = field::Empty,
        latency_us = field::Empty
    );
    let started = Instant::now();
    async move {
        let result = match auth.tenant(metadata).await {
            Ok(tenant) => {
                tracing::Span::current().record("tenant", tenant.as_str());
                handler(tenant).await
            }
            Err(err) => Err(err),
        };
        let span = tracing::Span::current();
        span.record("latency_us", started.elapsed().as_micros() as u64);
        match result {
            Ok(value) => {
                span.record("code", "OK");
                tracing::info!("rpc completed");
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
