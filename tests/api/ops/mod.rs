//! The service as operators run it: graceful shutdown, database faults, back-pressure,
//! metrics, logs and health, TLS, the real binary's start-up and CLI, the schema, the
//! documentation, and outside tools (grpcurl, a Python client, buf) and the client
//! packages of `clients/` against it.

mod backpressure;
mod balancer;
mod cancellation;
mod cli;
mod compression;
mod contract;
mod docs;
mod embedded;
mod faults;
mod grpcurl;
mod metrics;
mod migrations;
mod node;
mod operations;
mod pgbouncer;
mod python;
mod python_client;
mod read_replicas;
mod schema;
mod server;
mod shutdown;
mod tenant_statements;
mod tls;
mod tracing_export;
mod typescript_client;
mod unavailable;
