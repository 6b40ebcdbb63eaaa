//! Opening a store from its URL, and the settings and counters every backend shares.

use std::sync::Arc;

use super::{DynStore, StoreError, StoreResult, postgres, sqlite};

/// Opens (and migrates) the store named by `url`: `postgres://...` or `sqlite://PATH`.
pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url, options).await?))
    } else if url.starts_with("sqlite:") {
        // Refused rather than ignored: an operator who set it expects reads offloaded.
        if !options.replicas.urls.is_empty() {
            return Err(StoreError::Config(
                "--database-read-url needs a PostgreSQL --database-url: \
                 an embedded SQLite database has no read replicas"
                    .into(),
            ));
        }
        Ok(Arc::new(sqlite::SqliteStore::connect(url, options).await?))
    } else {
        Err(StoreError::Config(
            "database url must start with `postgres://`, `postgresql://` or `sqlite://`".into(),
        ))
    }
}

/// Database connections, summed over a backend's pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections the pools may open.
    pub max: u32,
    /// Connections open now (idle or in use).
    pub open: u32,
    /// Open connections waiting for work.
    pub idle: u32,
}

/// Counters a backend keeps about its own work (zero where it has no such work).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounters {
    /// Statements that answered coalesced point reads.
    pub lookup_batches: u64,
    /// Point reads those statements answered.
    pub lookups: u64,
    /// Batches that carried queued writes (`coalesce.rs`: CreateContact, and on SQLite
    /// UpdateContact's compare-and-set); a write that found a slot free is a batch of
    /// its own.
    pub write_batches: u64,
    /// Writes those batches carried.
    pub writes: u64,
}

/// Pool settings shared by both backends.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing with UNAVAILABLE.
    pub acquire_timeout: std::time::Duration,
    /// Run pending migrations on connect.
    pub migrate: bool,
    /// PostgreSQL is reached through a pooler in transaction mode (PgBouncer): see
    /// `postgres/conns.rs`.
    pub transaction_pooler: bool,
    /// Read replicas for the heavy reads (PostgreSQL only).
    pub replicas: ReplicaOptions,
    /// Most coalesced write batches in flight, 0 for none (`coalesce.rs`; at most 1
    /// on SQLite).
    pub write_batches: u8,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(5),
            migrate: true,
            transaction_pooler: false,
            replicas: ReplicaOptions::default(),
            write_batches: 1,
        }
    }
}

/// Where a heavy read (a streamed list's page, a count) may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// A usable read replica where the store has one (it may lag the primary by up
    /// to `--max-replica-lag`), else the primary.
    #[default]
    Replica,
    /// The primary: sees every write acknowledged before the read began.
    Primary,
}

/// Read replicas (`--database-read-url`) and when one is too far behind to use.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// `postgres://` URLs of hot standbys of the primary.
    pub urls: Vec<String>,
    /// A replica whose replay lags the primary by more is skipped until it catches up.
    pub max_lag: std::time::Duration,
    /// How often each replica's reachability and lag are checked.
    pub check_interval: std::time::Duration,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            max_lag: std::time::Duration::from_secs(5),
            check_interval: std::time::Duration::from_secs(1),
        }
    }
}

/// A read replica as its last check found it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaState {
    /// `host:port/database` (never credentials).
    pub name: String,
    /// Heavy reads go to it: reachable, in recovery, within the lag allowed.
    pub usable: bool,
    /// How far its replay trails the primary, as of the last check that reached it.
    pub lag: Option<std::time::Duration>,
}
