//! The operator's side of the real binary: JSON logs that carry each RPC's method,
//! tenant, code and latency but never a key or a property value, and the `health`
//! subcommand the container's HEALTHCHECK runs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kraiter_contacts::client::{Client, pb, properties};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{Backend, spawn_app};

const BINARY: &str = env!("CARGO_BIN_EXE_kraiter-contacts");

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next log line, as JSON, within a generous deadline.
fn next_line(lines: &mpsc::Receiver<String>) -> Value {
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the server logs within 30s");
    serde_json::from_str(&line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_method_tenant_code_and_latency_but_never_keys_or_property_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/logs.db", dir.path().display());
    let created = Command::new(BINARY)
        .args(["keys", "create", "--tenant", "acme"])
        .env("DATABASE_URL", &url)
        .output()
        .expect("run keys create");
    assert!(created.status.success(), "keys create");
    let key = String::from_utf8(created.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();

    let child = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("DATABASE_URL", &url)
        // The most verbose level our own code logs at: nothing secret there either.
        .env("RUST_LOG", "kraiter_contacts=debug,info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut server = Server(child);
    let stderr = server.0.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = next_line(&lines);
        log.push(line.clone());
        if line["message"] == "listening" {
            break line["addr"]
                .as_str()
                .expect("the address is logged")
                .to_owned();
        }
    };

    let secret_values = ["Top-Secret-Plan-7f3a", "Hidden-Value-91c2"];
    let client = Client::connect(&format!("http://{addr}"), &key)
        .await
        .expect("connect");
    let contacts = client.contacts();
    let alice = contacts
        .create(pb::CreateContactRequest {
            email: "alice@example.com".into(),
            properties: Some(properties(json!({"plan": secret_values[0]}))),
            ..Default::default()
        })
        .await
        .expect("create");
    contacts
        .update(pb::UpdateContactRequest {
            id: alice.id.clone(),
            email: None,
            properties: Some(properties(json!({"nested": {"x": secret_values[1]}}))),
            ..Default::default()
        })
        .await
        .expect("update");
    let listed: Vec<_> = contacts
        .list(pb::ListContactsRequest {
            search: secret_values[1].to_lowercase(),
            ..Default::default()
        })
        .collect()
        .await;
    assert_eq!(listed.len(), 1);
    let failed = contacts.get("con_01J00000000000000000000000").await;
    assert!(failed.is_err(), "an unknown id fails");
    let calls = [
        "CreateContact",
        "UpdateContact",
        "ListContacts",
        "GetContact",
    ];

    let mut rpcs = Vec::new();
    while rpcs.len() < calls.len() {
        let line = next_line(&lines);
        log.push(line.clone());
        let message = line["message"].as_str().unwrap_or_default();
        if message == "rpc completed" || message == "rpc failed" {
            rpcs.push(line);
        }
    }
    drop(server);
    for line in lines.try_iter() {
        if let Ok(value) = serde_json::from_str(&line) {
            log.push(value);
        }
    }

    let text: Vec<String> = log.iter().map(Value::to_string).collect();
    for line in &text {
        assert!(!line.contains(&key), "a log line holds the API key: {line}");
        assert!(
            !line.contains(&key[3..15]),
            "a log line holds part of the API key: {line}"
        );
        for value in secret_values {
            assert!(
                !line.to_lowercase().contains(&value.to_lowercase()),
                "a log line holds a property value: {line}"
            );
        }
    }
    for (rpc, method) in rpcs.iter().zip(calls) {
        let span = &rpc["span"];
        assert_eq!(span["method"], method, "{rpc}");
        assert_eq!(span["tenant"], "acme", "{rpc}");
        assert!(span["latency_us"].is_u64(), "latency in {rpc}");
        let expected_code = if method == "GetContact" {
            "NotFound"
        } else {
            "OK"
        };
        assert_eq!(span["code"], expected_code, "{rpc}");
    }
    assert_eq!(rpcs[3]["reason"], "NOT_FOUND", "failures log the SDK code");
}

async fn wait_until_serving(app: &crate::support::TestApp) {
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    while let Some(update) = watch.next().await {
        if update.expect("an update").status == ServingStatus::Serving as i32 {
            return;
        }
    }
    panic!("health never turned SERVING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_subcommand_exits_zero_only_for_a_serving_server() {
    let app = spawn_app(Backend::Sqlite).await;
    wait_until_serving(&app).await;
    let addr = app.addr.to_string();
    let serving = tokio::task::spawn_blocking(move || {
        Command::new(BINARY)
            .args(["health", "--addr", &addr])
            .output()
            .expect("run health")
    })
    .await
    .expect("health runs");
    assert!(
        serving.status.success(),
        "{}",
        String::from_utf8_lossy(&serving.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&serving.stdout).trim(), "SERVING");

    // Nothing listens on a port we just had and released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    let down = Command::new(BINARY)
        .args(["health", "--addr", &closed, "--timeout", "2s"])
        .output()
        .expect("run health");
    assert_eq!(down.status.code(), Some(1), "no server is exit status 1");
}
