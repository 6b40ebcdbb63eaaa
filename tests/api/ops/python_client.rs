//! The repository's Python client package (`clients/python`), built and installed as
//! a user installs it (`pip install`, whose build generates the stubs from `proto/`
//! with grpcio-tools), runs the SDK scenario of `tests/python/client_scenario.py`
//! against a real server: create, get, getByEmail found and `None`, update, upsert, a
//! list paged by its iterator and resumed from its cursor, a list resumed after its
//! connection is cut mid-stream (a cutting proxy inside the script), errors raised as
//! `KraiterError` with the SDK code (CONFLICT, VALIDATION_ERROR with its field,
//! NOT_FOUND, ...), delete. Runs on PostgreSQL.

use std::path::Path;
use std::process::Command;

use crate::support::tools::python_client;
use crate::support::{Backend, spawn_app};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_package_runs_the_sdk_scenario_and_resumes_a_cut_list() {
    let app = spawn_app(Backend::Postgres).await;
    let (addr, key) = (app.addr.to_string(), app.key.clone());
    let output = tokio::task::spawn_blocking(move || {
        // Only the package and its own dependencies are importable.
        Command::new("python3")
            .arg(Path::new(ROOT).join("tests/python/client_scenario.py"))
            .args([&addr, &key])
            .env("PYTHONPATH", python_client())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("PYTHONOPTIMIZE")
            .output()
            .expect("run the Python client scenario")
    })
    .await
    .expect("the scenario runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("python client scenario passed"),
        "the Python client scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
