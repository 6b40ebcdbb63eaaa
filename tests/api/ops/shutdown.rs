//! Graceful shutdown of the real binary, on both backends, as the README promises it:
//! on SIGTERM health turns NOT_SERVING, the listener closes, in-flight calls get
//! `--shutdown-grace` to finish, then the process exits. Under 4 writers, with open
//! streams never read again and an update blocked in the database; nothing
//! acknowledged is lost, and the key is in none of the debug-level logs.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use serde_json::json;
use tokio::sync::RwLock;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::conformance;
use crate::support::locks::{self, WriteLock};
use crate::support::metrics::{sample, scrape};
use crate::support::replica::announced;
use crate::support::wait::{PATIENCE, eventually};
use crate::support::{Backend, props, spawn_app};

const BIN: &str = env!("CARGO_BIN_EXE_kraiter-contacts");
const GRACE: Duration = Duration::from_secs(3);
/// Beyond the grace period: the process tearing down, on a loaded machine.
const EXIT_SLACK: Duration = Duration::from_secs(2);

/// The binary serving `database_url`, its stderr (JSON logs) collected; killed when
/// dropped, so a failed assertion leaves no server behind.
struct Server {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    logs: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Server {
    fn start(database_url: &str) -> Self {
        // Health probes once, at start, so the pool's usage shows only the calls.
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--shutdown-grace", "3s", "--health-interval", "60m"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let (listening, logs) = announced(&mut child, Duration::from_secs(30));
        Server {
            child,
            addr: listening.addr,
            metrics: listening.metrics.expect("the metrics address"),
            logs: Some(logs),
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll the server").is_none()
    }

    /// Database connections the server has lent out, from its `/metrics`.
    async fn connections_in_use(&self) -> f64 {
        let body = scrape(self.metrics).await;
        sample(&body, r#"kraiter_db_pool_connections{state="in_use"}"#)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}").parse().expect("metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

/// What a writer saw: acknowledged ids, and the failure that ended it (the status
/// with its source), with when it came back.
struct Written {
    acked: Vec<String>,
    failure: Option<(Instant, Code, String)>,
}

/// Writers creating contacts until `stop` or their first failure. Each call holds a
/// read guard of `gate`: the test takes the write guard to pause them all.
fn spawn_writers(
    client: &ContactsServiceClient<Channel>,
    key: &str,
    gate: &Arc<RwLock<()>>,
    stop: &Arc<AtomicBool>,
    acked: &Arc<AtomicUsize>,
) -> Vec<JoinHandle<Written>> {
    (0..4)
        .map(|w| {
            let mut client = client.clone();
            let (key, gate, stop, count) =
                (key.to_owned(), gate.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut written = Written {
                    acked: Vec::new(),
                    failure: None,
                };
                for i in 0.. {
                    let _turn = gate.read().await;
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let request = pb::CreateContactRequest {
                        email: format!("w{w}-{i}@example.com"),
                        properties: Some(props(json!({"i": i}))),
                        ..Default::default()
                    };
                    match client.create_contact(authorized(request, &key)).await {
                        Ok(response) => {
                            written.acked.push(response.into_inner().id);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(status) => {
                            let message = format!("{status:?}");
                            written.failure = Some((Instant::now(), status.code(), message));
                            break;
                        }
                    }
                }
                written
            })
        })
        .collect()
}

/// Waits until the blocked update is in the server's hands: on PostgreSQL it waits on
/// the row lock; on SQLite (whose file lock shows no waiters) the server has lent out
/// a connection for it, the writers being paused and everything else idle.
async fn wait_until_in_flight(server: &Server, lock: &mut WriteLock, backend: Backend) {
    if backend == Backend::Postgres {
        let deadline = Instant::now() + PATIENCE;
        while lock.waiters().await < Some(1) {
            assert!(
                Instant::now() < deadline,
                "the update never waited on the lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return;
    }
    eventually(PATIENCE, "the update takes a connection", || async {
        (server.connections_in_use().await >= 1.0).then_some(())
    })
    .await;
}

async fn sigterm_drains_in_flight_calls_and_exits_cleanly_losing_nothing(backend: Backend) {
    // The in-process app makes the database and the tenant's key, and reads back.
    let app = spawn_app(backend).await;
    let key = app.key.clone();
    let mut server = Server::start(&app.database_url);
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = ContactsServiceClient::new(channel.clone());

    // Health, watched from before the signal.
    let mut watch = HealthClient::new(channel.clone())
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
            let _ = health_tx.send(update.status);
        }
    });

    // Load: writers, and streams that are opened and then never read again.
    let gate = Arc::new(RwLock::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers = spawn_writers(&client, &key, &gate, &stop, &acked);
    eventually(PATIENCE, "the writers write", || async {
        (acked.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
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

    // A unary call that is in flight when the signal comes: it waits on a lock. The
    // writers pause meanwhile, so that on SQLite the connection it takes shows.
    let target = client
        .create_contact(authorized(
            pb::CreateContactRequest {
                email: "in-flight@example.com".into(),
                properties: None,
                ..Default::default()
            },
            &key,
        ))
        .await
        .expect("create")
        .into_inner();
    let paused = gate.write().await;
    eventually(PATIENCE, "the server's pool goes idle", || async {
        (server.connections_in_use().await == 0.0).then_some(())
    })
    .await;
    let mut lock = locks::hold(&app, &target.id).await;
    let in_flight = {
        let mut client = client.clone();
        let (id, key) = (target.id.clone(), key.clone());
        tokio::spawn(async move {
            let request = pb::UpdateContactRequest {
                id,
                email: None,
                properties: Some(props(json!({"updated": true}))),
                ..Default::default()
            };
            client.update_contact(authorized(request, &key)).await
        })
    };
    wait_until_in_flight(&server, &mut lock, backend).await;
    drop(paused);

    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(kill.success());

    // Health turns first: NOT_SERVING is the first update after the signal, and it
    // comes while the process runs and the call is still in flight.
    let status = tokio::time::timeout(PATIENCE, health_rx.recv())
        .await
        .expect("a health update after SIGTERM")
        .expect("the watch is still open");
    assert_eq!(
        status,
        ServingStatus::NotServing as i32,
        "health turns first"
    );
    assert!(server.running(), "health turned before the exit");
    // The listener closes while the in-flight call is still given its time.
    eventually(PATIENCE, "the listener closes", || async {
        tokio::net::TcpStream::connect(server.addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(server.running(), "the listener closed before the exit");
    assert!(
        !in_flight.is_finished(),
        "the in-flight call is still waiting"
    );

    // The in-flight call completes within the grace period.
    lock.release().await;
    let updated = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .expect("the in-flight call returns")
        .expect("task")
        .expect("the in-flight call completes");
    assert!(updated.into_inner().properties.is_some());
    stop.store(true, Ordering::SeqCst);

    // The streams are never read again: shutdown must not wait for them forever.
    let exit = loop {
        if let Some(exit) = server.child.try_wait().expect("poll the server") {
            break exit;
        }
        assert!(
            signalled.elapsed() < GRACE + EXIT_SLACK + PATIENCE,
            "the server never exits"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = signalled.elapsed();
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(
        took < GRACE + EXIT_SLACK,
        "exited within the grace period: {took:?}"
    );
    drop(streams);

    // Writers fail only once the signal has come, and only by being turned away.
    let mut written = vec![target.id];
    for writer in writers {
        let writer = writer.await.expect("writer");
        written.extend(writer.acked);
        if let Some((at, code, message)) = writer.failure {
            assert!(
                at > signalled,
                "a writer failed before the signal: {code:?} {message}"
            );
            // Turned away: a new connection or stream refused (UNAVAILABLE), or a call
            // still queued in the client when the connection closed, never sent; or a
            // stream the client opened as the server's graceful GOAWAY (NO_ERROR) was
            // on its way, above the GOAWAY's last stream id, so never processed (h2
            // reports it as that GOAWAY, which tonic turns into INTERNAL).
            let never_sent = code == Code::Cancelled && message.contains("connection closed");
            let refused_by_goaway = message.contains("GoAway") && message.contains("NO_ERROR");
            assert!(
                code == Code::Unavailable || never_sent || refused_by_goaway,
                "a writer's call failed after the signal without being turned away: {message}"
            );
        }
    }
    // Every acknowledged write is in the database the process left behind.
    let mut reader = app.client();
    for id in &written {
        reader
            .get_contact(pb::GetContactRequest { id: id.clone() })
            .await
            .unwrap_or_else(|status| panic!("acknowledged {id} lost: {status:?}"));
    }
    let lines = server
        .logs
        .take()
        .expect("logs")
        .join()
        .expect("log reader");
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
        "shutdown ({backend:?}): {} writes acknowledged around SIGTERM, all present; exit after {took:?}",
        written.len()
    );
}

conformance!(sigterm_drains_in_flight_calls_and_exits_cleanly_losing_nothing);
