//! The one integration-test binary: every test talks gRPC to a real server over
//! loopback, on real PostgreSQL and real SQLite (each conformance test runs on both).

mod activity;
mod concurrency;
mod contacts;
mod embedded;
mod errors;
mod helpers;
mod list;
mod postgres;
mod server;
mod tenancy;
mod timeline;
