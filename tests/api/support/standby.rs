//! A primary and a hot standby streaming from it, made once for the read-replica tests
//! (a base backup is heavy): a `TestCluster` of its own as the primary, recording
//! statements (`pg_stat_statements`), and a standby cloned from it with the installed
//! `pg_basebackup -R` (streaming replication, `primary_conninfo` written for it),
//! started on a port of its own with the same statement recording. The tests that use
//! them take `lock` in turn: one stops the standby, another pauses its replay, and
//! each reads the statement counts of both servers.

use std::time::Duration;

use sqlx::Connection;

use super::cluster::TestCluster;

/// Settings both servers run with, so the standby records its statements too.
pub const STATEMENT_STATS: &[&str] = &[
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=all",
    "pg_stat_statements.max=5000",
];

pub struct ReplicaPair {
    pub primary: TestCluster,
    pub standby: TestCluster,
    /// Held by each test for its whole run.
    pub lock: tokio::sync::Mutex<()>,
}

static PAIR: tokio::sync::OnceCell<ReplicaPair> = tokio::sync::OnceCell::const_new();

/// The primary and its standby, started on first use.
pub async fn replica_pair() -> &'static ReplicaPair {
    PAIR.get_or_init(start_pair).await
}

async fn start_pair() -> ReplicaPair {
    let made = tokio::task::spawn_blocking(|| {
        let primary = TestCluster::start_new_with(STATEMENT_STATS);
        let standby = TestCluster::standby_of(&primary, STATEMENT_STATS);
        (primary, standby)
    })
    .await
    .expect("start the primary and the standby");
    let (primary, standby) = made;
    let url = primary.url("kraiter");
    let mut db = sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to the primary");
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut db)
        .await
        .expect("the statement extension");
    ReplicaPair {
        primary,
        standby,
        lock: tokio::sync::Mutex::new(()),
    }
}

impl ReplicaPair {
    pub fn primary_url(&self) -> String {
        self.primary.url("kraiter")
    }

    pub fn standby_url(&self) -> String {
        self.standby.url("kraiter")
    }
}

pub async fn connect(url: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|err| panic!("connect to {url}: {err}"))
}

/// How many times the statements whose text contains every one of `parts` ran on
/// the server at `url` (`pg_stat_statements`, all databases).
pub async fn statement_calls(url: &str, parts: &[&str]) -> i64 {
    let mut db = connect(url).await;
    let texts: Vec<(String, i64)> = sqlx::query_as("SELECT query, calls FROM pg_stat_statements")
        .fetch_all(&mut db)
        .await
        .expect("read pg_stat_statements");
    texts
        .iter()
        .filter(|(query, _)| !query.contains("pg_stat_statements"))
        .filter(|(query, _)| parts.iter().all(|part| query.contains(part)))
        .map(|(_, calls)| calls)
        .sum()
}

/// How long a test waits for the server's replica check to see a change.
pub const REPLICA_CHECK: Duration = Duration::from_millis(200);
