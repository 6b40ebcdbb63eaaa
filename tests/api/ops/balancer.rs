//! Three replicas of the real binary on one PostgreSQL, behind nginx configured by
//! `deploy/nginx.conf`, under mixed load; one replica gets SIGTERM. The balancer
//! drains it: no acknowledged write is lost, every call succeeds within the standard
//! retry policy (UNAVAILABLE retried with backoff, writes with their request id, so
//! a retry never writes twice), and list streams on the stopped replica resume from
//! their cursor on another (the Rust client does it). Prints its figures
//! (`--nocapture`) for the README's scaling section.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kraiter_contacts::api::pb;
use kraiter_contacts::client::{Client, ClientError};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Endpoint;

use crate::support::metrics::{scrape, try_sample};
use crate::support::nginx::Nginx;
use crate::support::replica::Replica;
use crate::support::{Backend, props, spawn_app};

const GRACE: &str = "3s";
const SEEDED: usize = 300;

/// What a load task saw.
#[derive(Debug, Default)]
struct Seen {
    acked: Vec<String>,
    calls: usize,
    retries: usize,
    /// Calls that failed even after their retries, or with a code a standard
    /// retry policy does not retry.
    failures: Vec<String>,
}

/// Whether the standard retry policy retries it: UNAVAILABLE, from the service (with
/// its ErrorInfo) or from the transport or the balancer (without).
fn unavailable(err: &ClientError) -> bool {
    match err {
        ClientError::Unavailable { .. } | ClientError::Connect(_) => true,
        ClientError::Rpc(status) => status.code() == Code::Unavailable,
        _ => false,
    }
}

/// Runs `call` under the standard policy: UNAVAILABLE retried up to 5 times with
/// exponential backoff from 50 ms; anything else returned as it is.
async fn with_retries<T, F, Fut>(seen: &mut Seen, mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        seen.calls += 1;
        match call().await {
            Err(err) if unavailable(&err) && attempt < 5 => {
                attempt += 1;
                seen.retries += 1;
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            other => return other,
        }
    }
}

fn spawn_writer(
    client: Client,
    w: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let contacts = client.contacts();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let request = pb::CreateContactRequest {
                email: format!("w{w}-{n}@example.com"),
                properties: Some(props(serde_json::json!({"writer": w, "n": n}))),
                request_id: format!("w{w}-{n}"),
            };
            n += 1;
            let result = with_retries(&mut seen, || {
                let (contacts, request) = (&contacts, request.clone());
                async move { contacts.create(request).await }
            })
            .await;
            match result {
                Ok(contact) => {
                    seen.acked.push(contact.id);
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Err(status) => seen.failures.push(format!("create: {status:?}")),
            }
        }
        seen
    })
}

fn spawn_reader(client: Client, ids: Vec<String>, stop: Arc<AtomicBool>) -> JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let contacts = client.contacts();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            let id = ids[i % ids.len()].clone();
            i += 7;
            let result = with_retries(&mut seen, || {
                let (contacts, id) = (&contacts, id.clone());
                async move { contacts.get(&id).await }
            })
            .await;
            if let Err(status) = result {
                seen.failures.push(format!("get: {status:?}"));
            }
        }
        seen
    })
}

/// ListContacts calls a replica has set up so far.
async fn lists_on(replica: &Replica) -> f64 {
    let body = scrape(replica.metrics).await;
    try_sample(
        &body,
        r#"kraiter_rpc_requests_total{method="ListContacts",code="OK"}"#,
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_nginx_drain_on_sigterm_losing_nothing() {
    let app = spawn_app(Backend::Postgres).await;
    let mut replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start(&app.database_url, &["--shutdown-grace", GRACE]))
        .collect();
    let addrs: Vec<_> = replicas.iter().map(|r| r.addr).collect();
    let nginx = Nginx::start(&addrs).await;
    let channel = Endpoint::from_shared(format!("http://{}", nginx.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect to nginx");
    let client = Client::new(channel, &app.key).expect("a client");

    let mut seeded = Vec::new();
    for n in 0..SEEDED {
        let request = pb::CreateContactRequest {
            email: format!("seed{n:03}@example.com"),
            ..Default::default()
        };
        seeded.push(client.contacts().create(request).await.expect("seed").id);
    }

    // Slow list streams until one runs on the replica about to stop.
    let mut lists = Vec::new();
    for _ in 0..6 {
        let before = lists_on(&replicas[0]).await;
        let mut stream = client.contacts().list(pb::ListContactsRequest {
            limit: 5,
            search: "seed".into(),
            ..Default::default()
        });
        let first = stream
            .next()
            .await
            .expect("a contact")
            .expect("the list starts");
        let on_stopping = lists_on(&replicas[0]).await > before;
        lists.push(tokio::spawn(async move {
            let mut ids = vec![first.id];
            while let Some(contact) = stream.next().await {
                ids.push(contact.map_err(|err| format!("{err:?}"))?.id);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            Ok::<_, String>(ids)
        }));
        if on_stopping {
            break;
        }
    }
    assert!(
        lists_on(&replicas[0]).await >= 1.0,
        "a stream runs on the replica to stop"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..4 {
        tasks.push(spawn_writer(client.clone(), w, stop.clone(), acked.clone()));
    }
    for _ in 0..2 {
        tasks.push(spawn_reader(client.clone(), seeded.clone(), stop.clone()));
    }
    while acked.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    let acked_at_signal = acked.load(Ordering::SeqCst);
    replicas[0].sigterm();
    let exit = replicas[0]
        .exit_within(Duration::from_secs(20))
        .await
        .expect("the stopped replica exits");
    let drained_in = signalled.elapsed();
    assert!(exit.success(), "clean exit: {exit:?}");
    // Load goes on over the two that are left.
    let after = acked.load(Ordering::SeqCst);
    while acked.load(Ordering::SeqCst) < after + 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);

    let mut total = Seen::default();
    for task in tasks {
        let seen = task.await.expect("a load task");
        total.acked.extend(seen.acked);
        total.calls += seen.calls;
        total.retries += seen.retries;
        total.failures.extend(seen.failures);
    }
    assert!(
        total.failures.is_empty(),
        "every call succeeded within the retry policy: {:?}",
        total.failures
    );
    // Every acknowledged write is there, once.
    let unique: BTreeSet<_> = total.acked.iter().collect();
    assert_eq!(unique.len(), total.acked.len(), "no write twice");
    for id in &total.acked {
        client
            .contacts()
            .get(id)
            .await
            .unwrap_or_else(|err| panic!("{id} lost: {err:?}"));
    }
    // Lists run in id order; ids made in the same millisecond need not follow the
    // order of their creates.
    let mut in_order = seeded.clone();
    in_order.sort();
    for list in lists {
        let ids = list
            .await
            .expect("a list task")
            .expect("the list resumes and ends");
        assert!(
            ids == in_order,
            "every seeded contact once, in order, across the stop: {} of {}",
            ids.len(),
            in_order.len()
        );
    }
    println!(
        "balancer: 3 replicas behind nginx; {} calls ({} writes acknowledged, {} before the SIGTERM), \
         {} retried after UNAVAILABLE, 0 failed; the stopped replica exited {:.1} s after SIGTERM \
         (grace {GRACE}); every list stream ended complete",
        total.calls,
        total.acked.len(),
        acked_at_signal,
        total.retries,
        drained_in.as_secs_f64(),
    );
    drop(nginx);
}
