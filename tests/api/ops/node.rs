//! A Node.js client as its users write one: @grpc/grpc-js with @grpc/proto-loader,
//! loading `proto/` at run time, and the error details decoded with the `google/rpc`
//! protos the project ships (no file from outside the repository).
//! `tests/node/scenario.js` reads ErrorInfo for CONFLICT, VALIDATION_ERROR and
//! NOT_FOUND, pages through a streamed list and resumes it from a cursor, and cancels
//! a stream. Runs on PostgreSQL.

use std::path::Path;
use std::process::Command;

use crate::support::tools::node_client;
use crate::support::{Backend, spawn_app};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_client_loading_the_protos_reads_error_reasons_pages_and_cancels() {
    let app = spawn_app(Backend::Postgres).await;
    let (addr, key) = (app.addr.to_string(), app.key.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(Path::new(ROOT).join("tests/node/scenario.js"))
            .arg(&addr)
            .arg(&key)
            .arg(Path::new(ROOT).join("proto"))
            .env("NODE_PATH", node_client().join("node_modules"))
            .output()
            .expect("run the Node.js scenario")
    })
    .await
    .expect("the scenario runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("node scenario passed"),
        "the Node.js scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
