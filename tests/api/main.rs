//! The one integration-test binary: every test talks gRPC to a real server over
//! loopback, on real PostgreSQL and real SQLite (each conformance test runs on both).
//!
//! Tests are grouped by area, one folder each; what they share is in `support`.

/// ActivityService: the ingestion RPCs and the reads they feed.
mod activity;
/// ContactsService: contacts, lists, search, the timeline, tenants, the Rust client.
mod contacts;
/// Hostile and excessive input: odd values in every field, undecodable bytes,
/// size, stream, deadline and rate limits.
mod hostile;
/// The running service: shutdown, faults, metrics, logs, TLS, the binary and its
/// documentation, and the outside tools that use it.
mod ops;
/// `spawn_app`, the database fixtures and the request tables the tests share.
mod support;
