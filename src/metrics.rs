//! Prometheus metrics, served on `--metrics-listen` at `/metrics` (off by default).
//!
//! The metric families live in one process-wide registry: every RPC passes through
//! `api::handle`, which records it here, so nothing has to be threaded through the
//! services. Pool gauges and the store's own counters are read from the store when
//! Prometheus scrapes, so the store depends on nothing here.
//!
//! - `kraiter_rpc_requests_total{method, code}`: calls handled, by gRPC status code.
//! - `kraiter_rpc_duration_seconds{method, code}`: latency histogram; for a streamed
//!   list it is the time to set the stream up, the pages follow.
//! - `kraiter_stream_messages_sent_total{method}`: pages sent on streamed lists.
//! - `kraiter_db_pool_connections{state}`: open database connections, `idle` or `in_use`.
//! - `kraiter_db_pool_max_connections`: the pool size limit.
//! - `kraiter_auth_key_lookups_total`: database lookups of API keys not seen live;
//!   a flood of unknown keys shows here, bounded per peer.
//! - `kraiter_db_lookup_batches_total`, `kraiter_db_lookups_total` (PostgreSQL):
//!   statements sent for point reads and the reads they answered; their ratio is the
//!   mean batch size (see `store/postgres/lookups.rs`).
//! - `kraiter_db_write_batches_total`, `kraiter_db_writes_total`: batches written
//!   for CreateContact calls (statements on PostgreSQL, transactions on SQLite) and
//!   the creates they carried (see `store/coalesce.rs`).
//! - `kraiter_db_replica_usable{replica}`, `kraiter_db_replica_lag_seconds{replica}`
//!   (PostgreSQL with `--database-read-url`): whether heavy reads go to each read
//!   replica (1) or skip it (0), and its replay lag as of its last check.

use std::convert::Infallible;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::Code;

use crate::store::DynStore;

/// Latency buckets in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    replica: String,
}

type HistogramFamily = Family<RpcLabels, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    requests: Family<RpcLabels, Counter>,
    latency: HistogramFamily,
    stream_messages: Family<MethodLabels, Counter>,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
    lookup_batches: Counter,
    lookups: Counter,
    write_batches: Counter,
    writes: Counter,
    key_lookups: Counter,
    replica_usable: Family<ReplicaLabels, Gauge>,
    replica_lag: Family<ReplicaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("kraiter");
        let requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "RPCs handled, by method and gRPC status code",
            requests.clone(),
        );
        let latency: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register_with_unit(
            "rpc_duration",
            "RPC latency (for streams: until the stream is set up), by method and code",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let stream_messages = Family::<MethodLabels, Counter>::default();
        registry.register(
            "stream_messages_sent",
            "Messages (pages) sent on server-streaming RPCs",
            stream_messages.clone(),
        );
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Open database connections, idle or in use",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max_connections",
            "Most database connections the pool opens",
            pool_max.clone(),
        );
        let lookup_batches = Counter::default();
        registry.register(
            "db_lookup_batches",
            "Statements sent for coalesced point reads (GetContact, GetContactByEmail)",
            lookup_batches.clone(),
        );
        let lookups = Counter::default();
        registry.register(
            "db_lookups",
            "Point reads answered by those statements",
            lookups.clone(),
        );
        let write_batches = Counter::default();
        registry.register(
            "db_write_batches",
            "Batches written for CreateContact calls (a statement on PostgreSQL, a transaction on SQLite)",
            write_batches.clone(),
        );
        let writes = Counter::default();
        registry.register("db_writes", "Creates those batches carried", writes.clone());
        let key_lookups = Counter::default();
        registry.register(
            "auth_key_lookups",
            "Database lookups of API keys not seen live (first use, unknown or revoked keys)",
            key_lookups.clone(),
        );
        let replica_usable = Family::<ReplicaLabels, Gauge>::default();
        registry.register(
            "db_replica_usable",
            "Whether heavy reads go to this read replica (1) or skip it (0)",
            replica_usable.clone(),
        );
        let replica_lag =
            Family::<ReplicaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register_with_unit(
            "db_replica_lag",
            "How far the read replica's replay trails the primary, as of its last check",
            prometheus_client::registry::Unit::Seconds,
            replica_lag.clone(),
        );
        Self {
            replica_usable,
            replica_lag,
            key_lookups,
            lookup_batches,
            lookups,
            write_batches,
            writes,
            registry,
            requests,
            latency,
            stream_messages,
            pool_connections,
            pool_max,
        }
    }
}

/// Counts one finished RPC and its latency.
pub fn record_rpc(method: &'static str, code: Code, elapsed: Duration) {
    let labels = RpcLabels {
        method,
        code: code_name(code),
    };
    METRICS.requests.get_or_create(&labels).inc();
    METRICS
        .latency
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}

/// Counts one database lookup of an API key not seen live.
pub fn record_key_lookup() {
    METRICS.key_lookups.inc();
}

/// Counts one message sent on a server stream.
pub fn record_stream_message(method: &'static str) {
    METRICS
        .stream_messages
        .get_or_create(&MethodLabels { method })
        .inc();
}

/// `count` messages sent at once on a stream (a chunk of WatchContacts' changes).
pub fn record_stream_messages(method: &'static str, count: u64) {
    METRICS
        .stream_messages
        .get_or_create(&MethodLabels { method })
        .inc_by(count);
}

/// The exposition text, with the pool gauges and the store's counters read from
/// `store` now (the store keeps its own counts, so it needs nothing from here).
pub fn render(store: &DynStore) -> String {
    // The registry is one per process but a test process runs many stores: without
    // this, another render could store its counters between these and the encoding.
    static RENDERING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = RENDERING
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let usage = store.pool_usage();
    let counters = store.counters();
    let metrics = &*METRICS;
    metrics.lookup_batches.inner().store(
        counters.lookup_batches,
        std::sync::atomic::Ordering::Relaxed,
    );
    metrics
        .lookups
        .inner()
        .store(counters.lookups, std::sync::atomic::Ordering::Relaxed);
    metrics
        .write_batches
        .inner()
        .store(counters.write_batches, std::sync::atomic::Ordering::Relaxed);
    metrics
        .writes
        .inner()
        .store(counters.writes, std::sync::atomic::Ordering::Relaxed);
    metrics
        .pool_connections
        .get_or_create(&PoolLabels { state: "idle" })
        .set(i64::from(usage.idle));
    metrics
        .pool_connections
        .get_or_create(&PoolLabels { state: "in_use" })
        .set(i64::from(usage.open.saturating_sub(usage.idle)));
    metrics.pool_max.set(i64::from(usage.max));
    for replica in store.replicas() {
        let labels = ReplicaLabels {
            replica: replica.name,
        };
        metrics
            .replica_usable
            .get_or_create(&labels)
            .set(i64::from(replica.usable));
        metrics
            .replica_lag
            .get_or_create(&labels)
            .set(replica.lag.map_or(f64::NAN, |lag| lag.as_secs_f64()));
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry)
        .expect("writing to a String cannot fail");
    text
}

/// Serves `GET /metrics` over HTTP/1.1 until the task is dropped.
pub async fn serve(listener: TcpListener, store: DynStore) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "metrics listener cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &store);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "metrics connection failed");
            }
        });
    }
}

fn respond<B>(request: &Request<B>, store: &DynStore) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, render(store)),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response from static parts is valid")
}

/// gRPC's names for status codes (as logged), for label values.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
