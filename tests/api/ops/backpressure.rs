//! A slow reader of a stream holds bounded server memory: the server produces a page
//! only when the one before it has been taken (a one-slot channel), and HTTP/2 flow
//! control stops the encoder once the reader's window is full. Measured on the real
//! binary, in its own process, from `/proc/<pid>/status`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kraiter_contacts::api::pb;
use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use serde_json::json;
use tonic::transport::Channel;

use crate::conformance;
use crate::support::{Backend, props, spawn_app};

const BIN: &str = env!("CARGO_BIN_EXE_kraiter-contacts");
const CONTACTS: usize = 1200;
/// Each contact carries ~48 KB of properties: 1,200 of them are ~55 MiB on the wire.
const FILLER: usize = 48_000;
const PAGE: i32 = 20;

/// The server binary as a child process, killed when dropped (also on a failed assert).
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(database_url: &str) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let stderr = child.stderr.take().expect("stderr");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("\"listening\"") {
                    let value: serde_json::Value = serde_json::from_str(&line).expect("json log");
                    let _ = addr_tx.send(value["addr"].as_str().expect("addr").to_owned());
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server announces its address");
        Server { child, addr }
    }

    /// Resident memory of the server process, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }
}

fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}").parse().expect("metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

async fn a_slow_reader_holds_bounded_server_memory(backend: Backend) {
    // Seed through an in-process server; measure a fresh server process on the same data,
    // so the heap grown by seeding cannot hide what the stream allocates.
    let app = spawn_app(backend).await;
    let filler = "x".repeat(FILLER);
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (mut client, filler) = (app.client(), filler.clone());
        writers.spawn(async move {
            for i in (w..CONTACTS).step_by(4) {
                let request = pb::CreateContactRequest {
                    email: format!("slow{i}@example.com"),
                    properties: Some(props(json!({ "filler": filler, "i": i }))),
                    ..Default::default()
                };
                client
                    .create_contact(request)
                    .await
                    .expect("seed a contact");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a seeding task");
    }

    let server = Server::start(&app.database_url);
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = ContactsServiceClient::new(channel.clone());
    // Warm the server up with a whole small stream and a lookup before the baseline.
    let warm = pb::ListContactsRequest {
        limit: 2,
        search: "slow1@".into(),
        ..Default::default()
    };
    let mut stream = client
        .list_contacts(authorized(warm, &app.key))
        .await
        .expect("warm-up stream")
        .into_inner();
    while stream.message().await.expect("warm-up page").is_some() {}
    let before = server.rss_kib();

    let request = pb::ListContactsRequest {
        limit: PAGE,
        ..Default::default()
    };
    let mut stream = client
        .list_contacts(authorized(request, &app.key))
        .await
        .expect("open the stream")
        .into_inner();
    let first = stream.message().await.expect("first page").expect("a page");
    assert_eq!(first.contacts.len(), PAGE as usize);

    // Stop reading for two seconds; watch the server's memory meanwhile.
    let mut peak = 0;
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(2) {
        peak = peak.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Other callers are still served while the stream waits on its reader.
    let mut other = ContactsServiceClient::new(channel.clone());
    let found = tokio::time::timeout(
        Duration::from_secs(5),
        other.get_contact_by_email(authorized(
            pb::GetContactByEmailRequest {
                email: "slow7@example.com".into(),
            },
            &app.key,
        )),
    )
    .await
    .expect("a lookup is not held up by the slow stream")
    .expect("the lookup succeeds");
    let found = found.into_inner().contact.expect("slow7 exists");
    assert_eq!(found.email, "slow7@example.com");

    // The whole stream is ~55 MiB of messages (more as decoded rows); while its reader
    // sleeps the server holds a few pages of ~1 MB each, whatever the stream's length.
    let total_mib = CONTACTS * FILLER / (1024 * 1024);
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("slow reader: server RSS {before} -> {peak} KiB during the pause");
    assert!(
        grown_mib < 24,
        "server RSS grew by {grown_mib} MiB ({before} -> {peak} KiB) while a reader of a \
         {total_mib} MiB stream slept: the server buffers ahead of its reader"
    );

    // Then the reader goes on and gets everything, exactly once.
    let mut ids: Vec<String> = first.contacts.into_iter().map(|c| c.id).collect();
    while let Some(page) = stream.message().await.expect("page") {
        ids.extend(page.contacts.into_iter().map(|c| c.id));
    }
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((total, ids.len()), (CONTACTS, CONTACTS));

    // The same with pages of up to 1,000: the pages are cut at their byte budget, and
    // a query stops at its own (old code read 1,001 rows of ~48 KB in one query).
    let before = server.rss_kib();
    let request = pb::ListContactsRequest {
        limit: 1000,
        ..Default::default()
    };
    let mut stream = client
        .list_contacts(authorized(request, &app.key))
        .await
        .expect("open the stream of large pages")
        .into_inner();
    let first = stream.message().await.expect("first page").expect("a page");
    assert!(
        !first.contacts.is_empty() && first.contacts.len() < 1000,
        "a page of ~48 KB contacts is cut at its byte budget: {} contacts",
        first.contacts.len()
    );
    let mut peak = 0;
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(2) {
        peak = peak.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("slow reader, limit 1000: server RSS {before} -> {peak} KiB during the pause");
    assert!(
        grown_mib < 24,
        "server RSS grew by {grown_mib} MiB ({before} -> {peak} KiB) while a reader of \
         pages of up to 1,000 large contacts slept: a query holds more than its budget"
    );
    let mut count = first.contacts.len();
    while let Some(page) = stream.message().await.expect("page") {
        count += page.contacts.len();
    }
    assert_eq!(count, CONTACTS, "every contact arrives once");

    // 32 such readers at once, each stopped after its first page: each stream holds
    // at most a page in the channel and two queries' rows (a page's budget of 1 MiB,
    // a query's of 4 MiB), so the server's memory grows by a bounded amount per
    // reader, not by the data each could read.
    let before = server.rss_kib();
    let mut paused = Vec::new();
    for _ in 0..READERS {
        // A connection each: paused streams on one connection would fill its
        // flow-control window, and the next stream's first page could not arrive.
        let connection = Channel::from_shared(format!("http://{}", server.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect a reader");
        let mut client = ContactsServiceClient::new(connection);
        let request = pb::ListContactsRequest {
            limit: 1000,
            ..Default::default()
        };
        let mut stream = client
            .list_contacts(authorized(request, &app.key))
            .await
            .expect("open a reader's stream")
            .into_inner();
        tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a reader's first page within 10 s")
            .expect("first page")
            .expect("a page");
        paused.push(stream);
    }
    let mut peak = 0;
    let pause = Instant::now();
    while pause.elapsed() < Duration::from_secs(2) {
        peak = peak.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("{READERS} slow readers, limit 1000: server RSS {before} -> {peak} KiB");
    assert!(
        grown_mib < READERS as u64 * 16,
        "server RSS grew by {grown_mib} MiB ({before} -> {peak} KiB) for {READERS} paused \
         readers of large contacts: more than a page and two queries each"
    );
    drop(paused);
}

/// Readers paused at once in the last part of the test.
const READERS: usize = 32;

conformance!(a_slow_reader_holds_bounded_server_memory);
