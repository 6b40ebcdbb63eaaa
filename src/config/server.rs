//! The server's flags: its store, limits, TLS, telemetry and read replicas.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{DEFAULT_DATABASE_URL, parse_duration, parse_otlp_endpoint, parse_size};

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// `postgres://USER:PASS@HOST/DB` for PostgreSQL, `sqlite://PATH` for an embedded file.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Maximum database connections in the pool.
    #[arg(long, env = "KRAITER_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How long a call waits for a free database connection before failing with UNAVAILABLE.
    #[arg(long, env = "KRAITER_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub db_acquire_timeout: Duration,
    /// What stands between the service and PostgreSQL: `transaction` for a pooler in
    /// transaction mode (PgBouncer `pool_mode = transaction`): each unit of work then runs
    /// in one transaction, migrations are not run (only checked) and watchers poll.
    #[arg(long, env = "KRAITER_DATABASE_POOLER", value_enum, default_value_t = DatabasePooler::None)]
    pub database_pooler: DatabasePooler,
    /// Most batches in flight that carry queued CreateContact calls (`store/coalesce.rs`;
    /// a create that finds one free goes alone): on PostgreSQL one statement each, plus
    /// one spare while they are slow; on SQLite one transaction on the single writer, so
    /// any value above 1 is 1. 0 sends each create alone. UpdateContact is never queued.
    #[arg(long, env = "KRAITER_DB_WRITE_BATCHES", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=16))]
    pub db_write_batches: u8,
}

/// See `StoreArgs::database_pooler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatabasePooler {
    /// PostgreSQL itself, or a pooler in session mode.
    None,
    /// A pooler in transaction mode (PgBouncer `pool_mode = transaction`).
    Transaction,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KRAITER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Log format on stderr.
    #[arg(long, env = "KRAITER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (off when unset).
    #[arg(long, env = "KRAITER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Create this tenant and print a new API key for it at start-up (for first runs on PostgreSQL).
    #[arg(long, env = "KRAITER_BOOTSTRAP_TENANT")]
    pub bootstrap_tenant: Option<String>,
    /// How often health probes the database.
    #[arg(long, env = "KRAITER_HEALTH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// How long shutdown waits for in-flight calls and streams before closing them.
    #[arg(long, env = "KRAITER_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub replicas: ReplicaArgs,
}

/// What one caller or connection may ask of the server. The defaults match
/// `LimitArgs::default()`, which tests and embedders use.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest request message accepted, after decompression (`4MiB`, `512KiB` or bytes);
    /// larger is RESOURCE_EXHAUSTED.
    #[arg(long, env = "KRAITER_MAX_MESSAGE_SIZE", default_value = "4MiB", value_parser = parse_size)]
    pub max_message_size: usize,
    /// Concurrent calls (HTTP/2 streams) one connection may have open; more wait.
    #[arg(long, env = "KRAITER_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
    /// Longest a unary call (or the start of a stream) may run before DEADLINE_EXCEEDED;
    /// a shorter client deadline (`grpc-timeout`) wins and also bounds the whole stream.
    #[arg(long, env = "KRAITER_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Calls per second each tenant may make (token bucket); off when unset.
    #[arg(long, env = "KRAITER_RATE_LIMIT_RPS")]
    pub rate_limit_rps: Option<u32>,
    /// Calls a tenant may make at once above the steady rate (bucket size); defaults to
    /// the rate.
    #[arg(long, env = "KRAITER_RATE_LIMIT_BURST", requires = "rate_limit_rps")]
    pub rate_limit_burst: Option<u32>,
    /// Database lookups per second, per peer address, of API keys this server has not
    /// seen live (a valid key costs one, once); past it and its burst of 10 times the
    /// rate, such calls get RESOURCE_EXHAUSTED without touching the database.
    #[arg(long, env = "KRAITER_UNKNOWN_KEY_LOOKUPS_RPS", default_value_t = 20)]
    pub unknown_key_lookups_rps: u32,
    /// How long a request id is remembered (a retry within it replays the first
    /// answer; one whose contact was erased is refused); older ones are purged in the
    /// background.
    #[arg(long, env = "KRAITER_REQUEST_ID_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub request_id_retention: Duration,
    /// How long changes of the feed (WatchContacts) are kept; older ones are purged
    /// in the background, and a resume token before them is RESUME_TOKEN_EXPIRED.
    #[arg(long, env = "KRAITER_CHANGE_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub change_retention: Duration,
    /// Most bytes a streamed page may take encoded (`1MiB`, `256KiB` or bytes): a page
    /// ends before the item that would pass it, so it may hold fewer than `limit`
    /// items; a page holds at least one item whatever its size.
    #[arg(long, env = "KRAITER_MAX_PAGE_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub max_page_bytes: usize,
    /// Streamed lists open at once on this server; past it a new one is
    /// RESOURCE_EXHAUSTED with `RetryInfo`.
    #[arg(long, env = "KRAITER_MAX_STREAMS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
    /// Streamed lists one tenant may have open at once; past it a new one is
    /// RESOURCE_EXHAUSTED with `RetryInfo`.
    #[arg(long, env = "KRAITER_MAX_STREAMS_PER_TENANT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_tenant: u32,
    /// Watches (WatchContacts) open at once on this server; past it a new one is
    /// RESOURCE_EXHAUSTED with `RetryInfo`.
    #[arg(long, env = "KRAITER_MAX_WATCHERS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watchers: u32,
    /// Watches one tenant may have open at once; past it a new one is
    /// RESOURCE_EXHAUSTED with `RetryInfo`.
    #[arg(long, env = "KRAITER_MAX_WATCHERS_PER_TENANT", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watchers_per_tenant: u32,
    /// How often a running stream checks again that its API key is live (before a page,
    /// at most this often); a revoked key ends the stream with UNAUTHENTICATED.
    #[arg(long, env = "KRAITER_STREAM_KEY_RECHECK", default_value = "30s", value_parser = parse_duration)]
    pub stream_key_recheck: Duration,
    /// When responses are compressed (gzip or zstd, as the client accepts):
    /// `when-compressed` only for a client that compressed its own request; `always` for
    /// any client that accepts it (grpc-js and others advertise gzip on every call);
    /// `never`.
    #[arg(long, env = "KRAITER_RESPONSE_COMPRESSION", value_enum, default_value_t = ResponseCompression::WhenCompressed)]
    pub response_compression: ResponseCompression,
    /// Batches (request messages) of one ImportContacts written at once, each in its
    /// own transaction, committed in batch order (PostgreSQL; SQLite writes one at
    /// a time whatever this says). An import holds at most this many request
    /// messages, and one more response. New contacts' ids follow row order at any
    /// depth (a batch's are made when the import takes it, in order).
    #[arg(long, env = "KRAITER_IMPORT_DEPTH", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub import_depth: u32,
}

/// See `LimitArgs::response_compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResponseCompression {
    WhenCompressed,
    Always,
    Never,
}

impl Default for LimitArgs {
    fn default() -> Self {
        Self {
            max_message_size: 4 * 1024 * 1024,
            max_concurrent_streams: 256,
            request_timeout: Duration::from_secs(30),
            rate_limit_rps: None,
            rate_limit_burst: None,
            unknown_key_lookups_rps: 20,
            request_id_retention: Duration::from_secs(7 * 24 * 3600),
            change_retention: Duration::from_secs(7 * 24 * 3600),
            max_page_bytes: 1024 * 1024,
            max_streams: 1024,
            max_streams_per_tenant: 64,
            max_watchers: 256,
            max_watchers_per_tenant: 16,
            stream_key_recheck: Duration::from_secs(30),
            response_compression: ResponseCompression::WhenCompressed,
            import_depth: 2,
        }
    }
}

/// TLS: both `--tls-cert` and `--tls-key` serve over TLS; `--tls-client-ca` also
/// requires client certificates signed by that CA (mutual TLS).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate chain to serve TLS with.
    #[arg(long, env = "KRAITER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "KRAITER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; clients must present a certificate signed by one of them.
    #[arg(long, env = "KRAITER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Tracing across services: off unless an OTLP endpoint is given.
#[derive(Debug, Clone, Default, Args)]
pub struct TelemetryArgs {
    /// Export each call's span over OTLP/gRPC to this collector (`http://host:4317`), as
    /// the child of the caller's W3C `traceparent` (off when unset).
    #[arg(long, env = "KRAITER_OTLP_ENDPOINT", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl StoreArgs {
    pub fn connect_options(&self) -> crate::store::ConnectOptions {
        crate::store::ConnectOptions {
            max_connections: self.db_max_connections,
            acquire_timeout: self.db_acquire_timeout,
            migrate: true,
            transaction_pooler: self.database_pooler == DatabasePooler::Transaction,
            replicas: Default::default(),
            write_batches: self.db_write_batches,
        }
    }

    /// The embedded backend gets a default tenant and key on first start.
    pub fn is_embedded(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

/// Read replicas of a PostgreSQL primary (see `store::ReplicaOptions`).
#[derive(Debug, Clone, Args)]
pub struct ReplicaArgs {
    /// `postgres://` URL of a hot standby for the heavy reads (streamed lists, counts,
    /// exports); several as a comma-separated list or a repeated flag. PostgreSQL only.
    #[arg(
        long,
        env = "DATABASE_READ_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub database_read_url: Vec<String>,
    /// A replica whose replay trails the primary by more is skipped until it catches up.
    #[arg(long, env = "KRAITER_MAX_REPLICA_LAG", default_value = "5s", value_parser = parse_duration)]
    pub max_replica_lag: Duration,
    /// How often each read replica's reachability and replay lag are checked.
    #[arg(long, env = "KRAITER_REPLICA_CHECK_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub replica_check_interval: Duration,
}

impl Default for ReplicaArgs {
    fn default() -> Self {
        let defaults = crate::store::ReplicaOptions::default();
        Self {
            database_read_url: Vec::new(),
            max_replica_lag: defaults.max_lag,
            replica_check_interval: defaults.check_interval,
        }
    }
}

impl ReplicaArgs {
    pub fn options(&self) -> crate::store::ReplicaOptions {
        crate::store::ReplicaOptions {
            urls: self
                .database_read_url
                .iter()
                .map(|url| url.trim().to_owned())
                .filter(|url| !url.is_empty())
                .collect(),
            max_lag: self.max_replica_lag,
            check_interval: self.replica_check_interval,
        }
    }
}
