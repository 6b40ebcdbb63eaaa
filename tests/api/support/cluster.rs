//! A PostgreSQL cluster of a test's own, on a fixed port and data directory, that
//! the test can stop and start again (the shared one in `postgres.rs` must stay up),
//! or a hot standby of one (`standby_of`).
//! As root, PostgreSQL runs as the `postgres` user. A watchdog removes it if the test
//! process dies; dropping it stops it at once.

use std::path::PathBuf;
use std::process::Command;

use crate::support::postgres::{
    chown_to_postgres, free_port, is_root, postgres_bin_dir, psql, spawn_watchdog, wait_until_ready,
};

pub struct TestCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    run_as: &'static str,
    /// `-c name=value` settings beyond the defaults of `start`.
    settings: Vec<String>,
}

impl TestCluster {
    /// initdb, start, and a database `kraiter` to use.
    pub fn start_new() -> Self {
        Self::start_new_with(&[])
    }

    /// `start_new` with extra server settings (`name=value`).
    pub fn start_new_with(settings: &[&str]) -> Self {
        let mut cluster = Self::prepared("kraiter-fault-pg-", settings);
        cluster.sh(&format!(
            "'{}' -D '{}' -U postgres --auth=trust --no-sync -E UTF8 --locale=C >'{}/initdb.log' 2>&1",
            cluster.bin.join("initdb").display(),
            cluster.data().display(),
            cluster.dir.display()
        ));
        cluster.start_on_a_free_port();
        psql(&cluster.url("postgres"), "CREATE DATABASE kraiter");
        cluster
    }

    /// A hot standby of `primary`: `pg_basebackup -R` (streaming the primary's WAL
    /// while it copies, `primary_conninfo` written for it), started with `settings`.
    pub fn standby_of(primary: &TestCluster, settings: &[&str]) -> Self {
        let mut settings = settings.to_vec();
        settings.push("hot_standby=on");
        let mut standby = Self::prepared("kraiter-standby-pg-", &settings);
        standby.sh(&format!(
            "'{}' -h 127.0.0.1 -p {} -U postgres -D '{}' -R -X stream -c fast \
             >'{}/basebackup.log' 2>&1",
            standby.bin.join("pg_basebackup").display(),
            primary.port,
            standby.data().display(),
            standby.dir.display()
        ));
        standby.start_on_a_free_port();
        standby
    }

    /// A data directory of its own (owned by `postgres` when run as root), removed
    /// with its server by a watchdog if the test process dies.
    fn prepared(prefix: &str, settings: &[&str]) -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("create a temporary directory")
            .keep();
        let run_as = if is_root() {
            chown_to_postgres(&dir);
            "runuser -u postgres -- "
        } else {
            ""
        };
        let cluster = Self {
            bin,
            dir,
            port: free_port(),
            run_as,
            settings: settings.iter().map(|s| format!(" -c {s}")).collect(),
        };
        spawn_watchdog(&format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {run_as}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            run_as = cluster.run_as,
            pg_ctl = cluster.bin.join("pg_ctl").display(),
            data = cluster.data().display(),
            dir = cluster.dir.display(),
        ));
        cluster
    }

    /// The port was free when picked, not necessarily when PostgreSQL binds it
    /// (another test's process may take it in between): pick another then.
    fn start_on_a_free_port(&mut self) {
        for attempt in 1.. {
            match self.try_start() {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("Address already in use") => {
                    self.port = free_port();
                }
                Err(log) => panic!("PostgreSQL did not start; server log:\n{log}"),
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        if let Err(log) = self.try_start() {
            panic!("PostgreSQL did not start; server log:\n{log}");
        }
    }

    /// `start`, or the server log when it failed.
    fn try_start(&self) -> Result<(), String> {
        let started = self.sh_status(&format!(
            "'{pg_ctl}' -D '{data}' -l '{dir}/server.log' -w -t 60 \
               -o \"-p {port} -k '{dir}' -c listen_addresses=127.0.0.1 -c fsync=off \
                   -c synchronous_commit=off -c full_page_writes=off -c max_connections=100{extra}\" \
               start >/dev/null",
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data().display(),
            dir = self.dir.display(),
            port = self.port,
            extra = self.settings.concat(),
        ));
        if !started {
            return Err(std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default());
        }
        wait_until_ready(&self.bin, self.port, &self.dir);
        Ok(())
    }

    /// Stops the server the way an outage does: open connections are cut
    /// (`-m fast` ends every session and rolls back open transactions).
    pub fn stop(&self) {
        self.sh(&format!(
            "'{}' -D '{}' -m fast -w -t 60 stop >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        ));
    }

    fn sh(&self, command: &str) {
        let ok = self.sh_status(command);
        let log = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        assert!(
            ok,
            "`{command}` failed; initdb or base backup log:\n{}{}\nserver log:\n{}",
            log("initdb.log"),
            log("basebackup.log"),
            log("server.log")
        );
    }

    /// Whether `command` succeeded.
    fn sh_status(&self, command: &str) -> bool {
        Command::new("sh")
            .arg("-c")
            .arg(format!("{}{command}", self.run_as))
            .status()
            .expect("run a PostgreSQL command")
            .success()
    }
}

impl Drop for TestCluster {
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
