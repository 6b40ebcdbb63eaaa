//! Command line and environment. Every flag has an environment variable, and the
//! README's configuration table is checked against `--help` by a test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default store: a SQLite file next to where the service runs.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/kraiter-contacts.db";

#[derive(Debug, Parser)]
#[command(
    name = "kraiter-contacts",
    version,
    about = "The Kraiter contacts gRPC service"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start-up; boxing `ServeArgs` would only make the match noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(StoreArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ask a running server's gRPC health service; exits 0 when it is SERVING, 1
    /// otherwise (the container's HEALTHCHECK).
    Health(HealthArgs),
    /// Import or export a tenant's contacts through a running server.
    Contacts {
        #[command(subcommand)]
        command: ContactsCommand,
    },
    /// Manage indexes of hot properties, for filters on them.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    /// Stream a CSV file (a header row: `email`, then one column per property) or a
    /// JSON Lines file (`{"email": ..., "properties": {...}}` a line) through
    /// ImportContacts; failed rows go to a file with their errors.
    Import(ImportArgs),
    /// Stream the tenant's contacts (ListContacts) to stdout.
    Export(ExportArgs),
}

/// Where the server is and who is calling.
#[derive(Clone, Args)]
pub struct RemoteArgs {
    /// The server's URL.
    #[arg(long, env = "KRAITER_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// The tenant's API key.
    #[arg(long, env = "KRAITER_API_KEY", hide_env_values = true)]
    pub key: String,
}

impl std::fmt::Debug for RemoteArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteArgs")
            .field("addr", &self.addr)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// From the file's extension: `.csv` is CSV, anything else JSON Lines.
    Auto,
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportModeArg {
    /// Create new contacts, merge properties into existing ones.
    Upsert,
    /// Create only; a row whose email exists fails.
    CreateOnly,
    /// Update only; a row whose email does not exist fails.
    UpdateOnly,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The file to import (`-` reads stdin, as JSON Lines unless `--format csv`).
    pub file: std::path::PathBuf,
    #[arg(long, value_enum, default_value_t = FileFormat::Auto)]
    pub format: FileFormat,
    #[arg(long, value_enum, default_value_t = ImportModeArg::Upsert)]
    pub mode: ImportModeArg,
    /// Rows per batch (one transaction, one response), 1 to 1000.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Where failed rows go, as JSON Lines with their errors (default: FILE.failed.jsonl).
    #[arg(long)]
    pub failed: Option<std::path::PathBuf>,
    /// CSV: keep every cell a string (no numbers, booleans, nulls or JSON).
    #[arg(long)]
    pub strings: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One contact a line, as JSON; re-importable as it is.
    Jsonl,
    /// A header row, then `id,email,suppressed,unsubscribed,created_at,updated_at,properties`
    /// (the properties as JSON), for spreadsheets.
    Csv,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Only contacts whose email or a property value contains this (case-insensitive).
    #[arg(long, default_value = "")]
    pub search: String,
    /// Only contacts whose `suppressed` flag has this value.
    #[arg(long)]
    pub suppressed: Option<bool>,
    /// Read from the primary even when the server has read replicas, so the export has
    /// every write acknowledged before it started.
    #[arg(long)]
    pub primary: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Index a property of a tenant (PostgreSQL: CREATE INDEX CONCURRENTLY).
    Create {
        /// Tenant whose contacts the index covers (PostgreSQL; on SQLite it covers all).
        #[arg(long)]
        tenant: String,
        /// Property path, plain keys joined by `.` (`plan`, `address.city`).
        #[arg(long)]
        property: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the property indexes and their definitions.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Drop the indexes `index create` made for this tenant and property.
    Drop {
        /// Tenant given to `index create`.
        #[arg(long)]
        tenant: String,
        /// Property given to `index create`.
        #[arg(long)]
        property: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Address of the server to check (`host:port`).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Service to ask about; empty means the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant (creating the tenant if needed); prints the key alone on stdout.
    Create {
        /// Tenant the key belongs to.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List keys (ids and state, never secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by id; takes effect on the next call.
    Revoke {
        /// Id of the key (`key_...`), as `keys list` shows it.
        key_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

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

/// A collector's address as `http://host:port`: the exporter speaks plaintext gRPC, and
/// would read a bare `host:port` as HTTPS, which it is not built for.
pub fn parse_otlp_endpoint(raw: &str) -> Result<String, String> {
    match raw.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && http::Uri::try_from(raw).is_ok() => Ok(raw.to_owned()),
        _ => Err(format!(
            "`{raw}`: give the collector as http://HOST:PORT (OTLP over plaintext gRPC)"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Durations as `250ms`, `5s` or `2m`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration like 5s"))?;
    let seconds = |per: u64| {
        value
            .checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{raw}` is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" | "" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(24 * 3600),
        _ => Err(format!("`{raw}`: unit must be ms, s, m, h or d")),
    }
}

/// Sizes as `4MiB`, `512KiB`, `1MB` or plain bytes.
pub fn parse_size(raw: &str) -> Result<usize, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a size like 4MiB"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "KB" | "kB" => 1000,
        "MiB" => 1024 * 1024,
        "MB" => 1000 * 1000,
        _ => return Err(format!("`{raw}`: unit must be B, KiB, KB, MiB or MB")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("`{raw}` is too large"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_urls_come_comma_separated_or_repeated() {
        let cli = Cli::try_parse_from([
            "kraiter-contacts",
            "--database-read-url",
            "postgres://a/db,postgres://b/db",
            "--database-read-url",
            "postgres://c/db",
        ])
        .expect("flags parse");
        let options = cli.serve.replicas.options();
        assert_eq!(
            options.urls,
            ["postgres://a/db", "postgres://b/db", "postgres://c/db"]
        );
        assert_eq!(options.max_lag, Duration::from_secs(5));
        let defaults = Cli::try_parse_from(["kraiter-contacts"]).expect("no flags parse");
        assert!(defaults.serve.replicas.options().urls.is_empty());
        assert_eq!(
            defaults.serve.replicas.max_replica_lag,
            ReplicaArgs::default().max_replica_lag
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5h"), Ok(Duration::from_secs(5 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 24 * 3600)));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration(&format!("{}d", u64::MAX)).is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("4GiB").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn limit_defaults_match_the_flags() {
        let cli = Cli::try_parse_from(["kraiter-contacts"]).expect("no flags parse");
        let parsed = cli.serve.limits;
        let default = LimitArgs::default();
        assert_eq!(parsed.max_message_size, default.max_message_size);
        assert_eq!(
            parsed.max_concurrent_streams,
            default.max_concurrent_streams
        );
        assert_eq!(parsed.request_timeout, default.request_timeout);
        assert_eq!(parsed.rate_limit_rps, None);
        assert_eq!(parsed.max_page_bytes, default.max_page_bytes);
        assert_eq!(parsed.max_streams, default.max_streams);
        assert_eq!(
            parsed.max_streams_per_tenant,
            default.max_streams_per_tenant
        );
        assert_eq!(parsed.stream_key_recheck, default.stream_key_recheck);
        assert_eq!(parsed.change_retention, default.change_retention);
        assert_eq!(parsed.max_watchers, default.max_watchers);
        assert_eq!(
            parsed.max_watchers_per_tenant,
            default.max_watchers_per_tenant
        );
        assert_eq!(parsed.import_depth, default.import_depth);
        assert!(cli.serve.tls.tls_cert.is_none());
    }

    #[test]
    fn otlp_endpoints_are_plaintext_grpc_urls() {
        let cli = Cli::try_parse_from(["kraiter-contacts"]).expect("no flags parse");
        assert_eq!(cli.serve.telemetry.otlp_endpoint, None, "off by default");
        assert_eq!(
            parse_otlp_endpoint("http://127.0.0.1:4317").as_deref(),
            Ok("http://127.0.0.1:4317")
        );
        assert!(parse_otlp_endpoint("http://otel-collector:4317").is_ok());
        for bad in [
            "127.0.0.1:4317",
            "https://collector:4317",
            "http://",
            "http://a b",
        ] {
            let err = parse_otlp_endpoint(bad).expect_err(bad);
            assert!(err.contains("http://HOST:PORT"), "{err}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
