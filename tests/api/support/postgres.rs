//! A PostgreSQL for the test run. With `DATABASE_URL` (a server you run) the suite
//! makes a fresh database in it; without, it starts a throwaway cluster from the
//! installed binaries (as the `postgres` user when run as root, since PostgreSQL
//! refuses to run as root). Either way a watchdog removes what was made when this
//! test process exits. Failing to get a database fails the tests: nothing is skipped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static DATABASE: OnceLock<String> = OnceLock::new();

/// URL of the database this test run uses (created on first call).
pub fn database_url() -> String {
    DATABASE
        .get_or_init(|| match std::env::var("DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => fresh_database_in(&url),
            _ => start_throwaway_cluster(),
        })
        .clone()
}

/// A database of its own in the test cluster, dropped when the process ends, for a
/// test whose server purges what every tenant wrote (a short retention).
pub fn own_database() -> String {
    fresh_database_in(&database_url())
}

fn fresh_database_in(admin_url: &str) -> String {
    let name = format!(
        "kraiter_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    psql(admin_url, &format!("CREATE DATABASE {name}"));
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("DATABASE_URL has a database path");
    // Drop the database once this process is gone.
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; psql -q '{admin_url}' -c 'DROP DATABASE IF EXISTS {name} WITH (FORCE)'",
        pid = std::process::id()
    );
    spawn_watchdog(&script);
    format!("{base}/{name}")
}

fn start_throwaway_cluster() -> String {
    let bin = postgres_bin_dir();
    let as_root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("kraiter-test-pg-")
        .tempdir()
        .expect("create a temporary directory")
        .keep();
    let run_as = if as_root {
        chown_to_postgres(&dir);
        "runuser -u postgres -- "
    } else {
        ""
    };
    let data = dir.join("data");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{run_as}'{}' -D '{}' -U postgres --auth=trust --no-sync -E UTF8 --locale=C >'{}/initdb.log' 2>&1",
            bin.join("initdb").display(),
            data.display(),
            dir.display()
        ))
        .status()
        .expect("run initdb");
    assert!(
        status.success(),
        "initdb failed; see {}/initdb.log",
        dir.display()
    );
    let port = free_port();
    // The watchdog owns the server: it starts it, waits for this process to exit,
    // then stops it and deletes the directory.
    let script = format!(
        "{run_as}'{postgres}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 \
           -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 \
           -c shared_buffers=128MB >'{dir}/server.log' 2>&1 & \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {run_as}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
        postgres = bin.join("postgres").display(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
        pid = std::process::id(),
    );
    spawn_watchdog(&script);
    let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    wait_until_ready(&bin, port, &dir);
    psql(&admin, "CREATE DATABASE kraiter_test");
    format!("postgres://postgres@127.0.0.1:{port}/kraiter_test")
}

pub fn postgres_bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect(
        "PostgreSQL server binaries (initdb) not found: install PostgreSQL or set DATABASE_URL",
    )
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn chown_to_postgres(dir: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .expect("run chown");
    assert!(
        status.success(),
        "running as root needs a `postgres` user to run PostgreSQL as"
    );
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}

// The watchdog must outlive this process, so it is deliberately never waited for.
#[allow(clippy::zombie_processes)]
pub fn spawn_watchdog(script: &str) {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the PostgreSQL watchdog");
}

pub fn wait_until_ready(bin: &Path, port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            return;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("PostgreSQL did not start within 60s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([
            "-q",
            "-o",
            "/dev/null",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql `{sql}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
