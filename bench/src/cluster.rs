//! A throwaway PostgreSQL for one benchmark run, started from the installed server
//! binaries (as the `postgres` user when run as root), or a fresh database in a
//! server given by URL. A watchdog removes what was made when this process exits,
//! however it exits.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct Postgres {
    /// URL of the benchmark database.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    /// Directory of `pgbench`, `psql`, ...
    pub bin: PathBuf,
    /// Data directory of a cluster we started (None for `--database-url`).
    pub data_dir: Option<PathBuf>,
    /// Where scripts and logs go.
    pub work_dir: PathBuf,
}

impl Postgres {
    /// PID of the postmaster, whose children are the backends, for CPU accounting.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let data = self.data_dir.as_ref()?;
        let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// Settings of the throwaway cluster; the same for the service and its baselines.
pub const SETTINGS: &[(&str, &str)] = &[
    ("shared_buffers", "2GB"),
    ("max_connections", "300"),
    ("maintenance_work_mem", "1GB"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "30min"),
];

pub fn start(work_dir: &Path, database_url: Option<&str>) -> anyhow::Result<Postgres> {
    let bin = bin_dir()?;
    match database_url {
        Some(url) => fresh_database_in(url, bin, work_dir),
        None => throwaway_cluster(bin, work_dir),
    }
}

fn fresh_database_in(admin_url: &str, bin: PathBuf, work_dir: &Path) -> anyhow::Result<Postgres> {
    let name = format!(
        "kraiter_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    psql(&bin, admin_url, &format!("CREATE DATABASE {name}"))?;
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; '{psql}' -q '{admin_url}' -c 'DROP DATABASE IF EXISTS {name} WITH (FORCE)'",
        pid = std::process::id(),
        psql = bin.join("psql").display(),
    );
    spawn_watchdog(&script)?;
    let (base, _) = admin_url
        .rsplit_once('/')
        .context("--database-url has no database path")?;
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let (auth, hostport) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
    let user = auth.split(':').next().unwrap_or("postgres").to_owned();
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    Ok(Postgres {
        url: format!("{base}/{name}"),
        host: host.to_owned(),
        port: port.parse().context("port in --database-url")?,
        user,
        database: name,
        bin,
        data_dir: None,
        work_dir: work_dir.to_owned(),
    })
}

fn throwaway_cluster(bin: PathBuf, work_dir: &Path) -> anyhow::Result<Postgres> {
    let dir = work_dir.join("pg");
    std::fs::create_dir_all(&dir)?;
    let run_as = run_as_postgres(&dir, "PostgreSQL")?;
    let data = dir.join("data");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{run_as}'{}' -D '{}' -U postgres --auth=trust --no-sync -E UTF8 --locale=C >'{}/initdb.log' 2>&1",
            bin.join("initdb").display(),
            data.display(),
            dir.display()
        ))
        .status()?;
    if !status.success() {
        bail!("initdb failed; see {}/initdb.log", dir.display());
    }
    let port = free_port()?;
    let mut settings: String = SETTINGS
        .iter()
        .map(|(name, value)| format!(" -c {name}={value}"))
        .collect();
    // For investigations only, e.g. `shared_preload_libraries=pg_stat_statements`;
    // a run reported in BENCHMARKS.md uses SETTINGS alone.
    if let Ok(extra) = std::env::var("KRAITER_BENCH_PG_SETTINGS") {
        for setting in extra.split_whitespace() {
            settings.push_str(&format!(" -c {setting}"));
        }
    }
    // The watchdog owns the server: it starts it, waits for this process to exit,
    // then stops it and deletes the whole work directory.
    let script = format!(
        "{run_as}'{postgres}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1{settings} \
           >'{dir}/server.log' 2>&1 & \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {run_as}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{work}'",
        postgres = bin.join("postgres").display(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
        work = work_dir.display(),
        pid = std::process::id(),
    );
    spawn_watchdog(&script)?;
    wait_until_ready(&bin, port, &dir)?;
    let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    psql(&bin, &admin, "CREATE DATABASE kraiter_bench")?;
    Ok(Postgres {
        url: format!("postgres://postgres@127.0.0.1:{port}/kraiter_bench"),
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        database: "kraiter_bench".into(),
        bin,
        data_dir: Some(data),
        work_dir: work_dir.to_owned(),
    })
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() && dir.join("pgbench").exists() {
            return Ok(dir);
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
    found
        .pop()
        .context("PostgreSQL server binaries (initdb, pgbench) not found: install PostgreSQL")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL and PgBouncer refuse to run as root: when this process is root, gives
/// `dir` to the `postgres` user and returns the prefix that runs a command as it.
pub fn run_as_postgres(dir: &Path, what: &str) -> anyhow::Result<&'static str> {
    if !is_root() {
        return Ok("");
    }
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()?;
    if !status.success() {
        bail!("running as root needs a `postgres` user to run {what} as");
    }
    Ok("runuser -u postgres -- ")
}

pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

// The watchdog must outlive this process, so it is deliberately never waited for.
#[allow(clippy::zombie_processes)]
pub fn spawn_watchdog(script: &str) -> anyhow::Result<()> {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn the PostgreSQL watchdog")?;
    Ok(())
}

pub fn wait_until_ready(bin: &Path, port: u16, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            bail!("PostgreSQL did not start within 60s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn psql(bin: &Path, url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new(bin.join("psql"))
        .args(["-qAtX", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .context("run psql")?;
    if !out.status.success() {
        bail!(
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
