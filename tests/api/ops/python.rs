//! A client in another language, generated from `proto/` alone: grpcio-tools makes the
//! Python stubs, and `tests/python/scenario.py` runs the SDK scenario with them
//! against a real server, reading error reasons from `google.rpc.ErrorInfo` as any
//! client would. Runs on PostgreSQL.

use std::path::Path;
use std::process::Command;

use crate::support::tools::python_tools;
use crate::support::{Backend, spawn_app};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Generates the Python client for every file of the contract into `out`.
fn generate_client(out: &Path) {
    let proto_dir = Path::new(ROOT).join("proto");
    let mut protos: Vec<_> = std::fs::read_dir(proto_dir.join("kraiter/contacts/v1"))
        .expect("read the proto directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();
    let output = python_tools()
        .python(out)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto_dir.display()))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&protos)
        .output()
        .expect("run grpc_tools.protoc");
    assert!(
        output.status.success(),
        "generating the Python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_runs_the_sdk_scenario_and_reads_error_reasons() {
    let app = spawn_app(Backend::Postgres).await;
    let generated = tempfile::tempdir().expect("tempdir");
    let out = generated.path().to_owned();
    let (addr, key) = (app.addr.to_string(), app.key.clone());
    let output = tokio::task::spawn_blocking(move || {
        generate_client(&out);
        let mut command: Command = python_tools().python(&out);
        command
            .arg(Path::new(ROOT).join("tests/python/scenario.py"))
            .args([&addr, &key])
            .output()
            .expect("run the Python scenario")
    })
    .await
    .expect("the scenario runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("python scenario passed"),
        "the Python scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
