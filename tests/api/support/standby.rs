//! A primary and a hot standby streaming from it, made once for the read-replica tests
//! (a base backup is heavy): a `TestCluster` of its own as the primary, recording
//! statements (`pg_stat_statements`), and a standby cloned from it with the installed
//! `pg_basebackup -R` (streaming replication, `primary_conninfo` written for it),
//! started on a port of its own with the same statement recording. The tests that use
//! them take `lock` in turn: one stops the standby, another pauses its replay, and
//! each reads the statement counts of both servers.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sqlx::Connection;

use super::cluster::TestCluster;
use super::postgres::{
    chown_to_postgres, free_port, is_root, postgres_bin_dir, spawn_watchdog, wait_until_ready,
};

/// Settings both servers run with, so the standby records its statements too.
pub const STATEMENT_STATS: &[&str] = &[
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=all",
    "pg_stat_statements.max=5000",
];

pub struct ReplicaPair {
    pub primary: TestCluster,
    pub standby: Standby,
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
        let standby = Standby::clone_of(&primary);
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

pub struct Standby {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    run_as: &'static str,
}

impl Standby {
    /// `pg_basebackup -R` of `primary` (streaming its WAL while it copies), started
    /// as a hot standby.
    fn clone_of(primary: &TestCluster) -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("kraiter-standby-pg-")
            .tempdir()
            .expect("create a temporary directory")
            .keep();
        let run_as = if is_root() {
            chown_to_postgres(&dir);
            "runuser -u postgres -- "
        } else {
            ""
        };
        let primary_port = port_of(&primary.url("postgres"));
        let standby = Self {
            bin,
            dir,
            port: free_port(),
            run_as,
        };
        standby.sh(&format!(
            "'{}' -h 127.0.0.1 -p {primary_port} -U postgres -D '{}' -R -X stream -c fast \
             >'{}/basebackup.log' 2>&1",
            standby.bin.join("pg_basebackup").display(),
            standby.data().display(),
            standby.dir.display()
        ));
        spawn_watchdog(&format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {run_as}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            run_as = standby.run_as,
            pg_ctl = standby.bin.join("pg_ctl").display(),
            data = standby.data().display(),
            dir = standby.dir.display(),
        ));
        standby.start();
        standby
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the standby and waits until it accepts connections (read-only).
    pub fn start(&self) {
        let stats: String = STATEMENT_STATS.iter().map(|s| format!(" -c {s}")).collect();
        self.sh(&format!(
            "'{pg_ctl}' -D '{data}' -l '{dir}/server.log' -w -t 60 \
               -o \"-p {port} -k '{dir}' -c listen_addresses=127.0.0.1 -c fsync=off \
                   -c max_connections=100 -c hot_standby=on{stats}\" start >/dev/null",
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data().display(),
            dir = self.dir.display(),
            port = self.port,
        ));
        wait_until_ready(&self.bin, self.port, &self.dir);
    }

    /// Stops the standby as an outage would: its sessions are cut (`-m fast`).
    pub fn stop(&self) {
        self.sh(&format!(
            "'{}' -D '{}' -m fast -w -t 60 stop >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        ));
    }

    fn sh(&self, command: &str) {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("{}{command}", self.run_as))
            .status()
            .expect("run a PostgreSQL command")
            .success();
        let log = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        assert!(
            ok,
            "`{command}` failed; base backup log:\n{}\nserver log:\n{}",
            log("basebackup.log"),
            log("server.log")
        );
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{}'{}' -D '{}' -m immediate stop >/dev/null 2>&1; rm -rf '{}'",
                self.run_as,
                self.bin.join("pg_ctl").display(),
                self.data().display(),
                self.dir.display()
            ))
            .status();
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("a port in {url}"))
}

/// How long a test waits for the server's replica check to see a change.
pub const REPLICA_CHECK: Duration = Duration::from_millis(200);
