//! The repository's TypeScript client package (`clients/typescript`), built by its
//! `npm ci` (ts-proto generates the stubs from `proto/` through buf, tsc compiles),
//! packed and installed from the tarball as a user installs it, runs the SDK scenario
//! of `tests/node/client_scenario.js` against a real server: create, get, getByEmail
//! found and `null`, update, upsert, a list paged by its async iterator and resumed
//! from its cursor, a list resumed after its connection is cut mid-stream (a cutting
//! proxy inside the script), errors thrown as `KraiterError` with the SDK code
//! (CONFLICT, VALIDATION_ERROR with its field, NOT_FOUND, ...), delete. Runs on
//! PostgreSQL.

use std::path::Path;
use std::process::Command;

use crate::support::tools::typescript_client;
use crate::support::{Backend, spawn_app};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_package_runs_the_sdk_scenario_and_resumes_a_cut_list() {
    let app = spawn_app(Backend::Postgres).await;
    let (addr, key) = (app.addr.to_string(), app.key.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(Path::new(ROOT).join("tests/node/client_scenario.js"))
            .args([&addr, &key])
            .env("NODE_PATH", typescript_client())
            .output()
            .expect("run the TypeScript client scenario")
    })
    .await
    .expect("the scenario runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("typescript client scenario passed"),
        "the TypeScript client scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
