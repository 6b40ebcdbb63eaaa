//! kraiter-contacts: the gRPC service that owns the contact records of the Kraiter
//! email platform. Layers depend downwards only: `api -> domain <- store`.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod client;
pub mod config;
pub mod domain;
pub mod error_reason;
pub mod keys;
pub mod metrics;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
