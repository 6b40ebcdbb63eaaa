//! Graceful shutdown of the real binary: SIGTERM under a load of unary calls and
//! open streams. Health turns NOT_SERVING first, in-flight calls complete, the
//! process exits cleanly within `--shutdown-grace`, and nothing acknowledged is lost.
//! Also: the key never appears in its logs, even at debug level.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use kraiter_contacts::domain::{ContactId, TenantId};
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::props;

const BIN: &str = env!("CARGO_BIN_EXE_kraiter-contacts");

fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}").parse().expect("metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_and_exits_cleanly_losing_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/contacts.db", dir.path().display());
    let created = Command::new(BIN)
        .args(["keys", "create", "--tenant", "drain"])
        .env("DATABASE_URL", &url)
        .output()
        .expect("create a key");
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();

    let grace = Duration::from_secs(3);
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--shutdown-grace", "3s", "--health-interval", "100ms"])
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    // Collect every log line; announce the address from the `listening` line.
    let stderr = child.stderr.take().expect("stderr");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let logs = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"listening\"") {
                let value: serde_json::Value = serde_json::from_str(&line).expect("json log");
                let _ = addr_tx.send(value["addr"].as_str().expect("addr").to_owned());
            }
            lines.push(line);
        }
        lines
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server announces its address");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = ContactsServiceClient::new(channel.clone());

    // Health, watched from before the signal.
    let mut health = HealthClient::new(channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    loop {
        let status = watch.next().await.expect("update").expect("ok").status;
        if status == ServingStatus::Serving as i32 {
            break;
        }
    }
    let (health_tx, mut health_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(update)) = watch.next().await {
            let _ = health_tx.send((update.status, Instant::now()));
        }
    });

    // Load: writers, and open streams read slowly.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut client = client.clone();
        let (stop, key) = (stop.clone(), key.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut refused = 0;
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let request = pb::CreateContactRequest {
                    email: format!("w{w}-{i}@example.com"),
                    properties: Some(props(json!({"i": i}))),
                };
                match client.create_contact(authorized(request, &key)).await {
                    Ok(response) => acked.push(response.into_inner().id),
                    // After the signal, new calls are turned away: fine, not acknowledged.
                    Err(_) => {
                        refused += 1;
                        if refused > 3 {
                            break;
                        }
                    }
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let request = pb::ListContactsRequest {
            limit: 1,
            ..Default::default()
        };
        let mut stream = client
            .list_contacts(authorized(request, &key))
            .await
            .expect("open a stream")
            .into_inner();
        stream.message().await.expect("page").expect("first page");
        streams.push(stream);
    }

    // A unary call that is in flight when the signal comes: it waits on a write lock.
    let target = client
        .create_contact(authorized(
            pb::CreateContactRequest {
                email: "in-flight@example.com".into(),
                properties: None,
            },
            &key,
        ))
        .await
        .expect("create")
        .into_inner();
    let mut lock = {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .expect("lock");
        conn
    };
    let in_flight = {
        let mut client = client.clone();
        let (id, key) = (target.id.clone(), key.clone());
        tokio::spawn(async move {
            let request = pb::UpdateContactRequest {
                id,
                email: None,
                properties: Some(props(json!({"updated": true}))),
            };
            client.update_contact(authorized(request, &key)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished(), "the update waits on the lock");

    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(kill.success());
    let (status, turned) = tokio::time::timeout(Duration::from_secs(5), health_rx.recv())
        .await
        .expect("a health update after SIGTERM")
        .expect("the watch is still open");
    assert_eq!(
        status,
        ServingStatus::NotServing as i32,
        "health turns first"
    );
    // Let the in-flight update finish within the grace period.
    sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("unlock");
    let updated = in_flight
        .await
        .expect("task")
        .expect("the in-flight call completes");
    assert!(updated.into_inner().properties.is_some());
    stop.store(true, Ordering::Relaxed);

    // The streams are never read again: shutdown must not wait for them forever.
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait for the server");
    let took = signalled.elapsed();
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(
        took < grace + Duration::from_secs(3),
        "exited within the drain time: {took:?}"
    );
    assert!(
        turned.duration_since(signalled) < took,
        "health turned before the exit"
    );
    drop(streams);

    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }
    acked.push(target.id);
    // Every acknowledged write is in the database the process left behind.
    let store = kraiter_contacts::store::connect(&url, &Default::default())
        .await
        .expect("reopen the database");
    let tenant = TenantId::parse("drain").expect("tenant");
    for id in &acked {
        let id = ContactId::parse(id, "id").expect("id");
        store
            .get_contact(&tenant, &id)
            .await
            .unwrap_or_else(|err| panic!("acknowledged {id:?} lost: {err}"));
    }
    let lines = logs.join().expect("log reader");
    assert!(
        lines.iter().any(|l| l.contains("draining")),
        "logged the drain"
    );
    for line in &lines {
        assert!(!line.contains(&key), "the key is in a log line: {line}");
        assert!(
            !line.contains(&key[3..20]),
            "part of the key is in a log line: {line}"
        );
    }
    println!(
        "shutdown: {} writes acknowledged around SIGTERM, all present; exit after {took:?}",
        acked.len()
    );
}
