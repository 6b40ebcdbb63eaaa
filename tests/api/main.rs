//! The one integration-test binary: every test talks gRPC to a real server over
//! loopback, on real PostgreSQL and real SQLite (each conformance test runs on both).

mod activity;
mod client;
mod cluster;
mod concurrency;
mod contacts;
mod contract;
mod docs;
mod embedded;
mod errors;
mod faults;
mod grpcurl;
mod helpers;
mod hostile;
mod hostile_cursors;
mod hostile_fields;
mod hostile_values;
mod isolation;
mod limits;
mod list;
mod locks;
mod metrics;
mod operations;
mod postgres;
mod python;
mod rate_limit;
mod raw;
mod requests;
mod schema;
mod server;
mod shutdown;
mod tenancy;
mod timeline;
mod tls;
mod tools;
mod wire;
