//! PgBouncer (Debian's `pgbouncer`, 1.18) in transaction mode in front of the test
//! PostgreSQL: one per test process, on loopback, run as the `postgres` user when the
//! tests run as root (PgBouncer refuses root), stopped by a watchdog when this process
//! exits. Installed with apt on first use when missing and the tests run as root (as
//! CI does); otherwise a missing PgBouncer fails the test with what to install.
//!
//! `conformance!` runs each test a third time as `pgbouncer::<name>` inside `scope`:
//! there `spawn_app` reaches the shared cluster through PgBouncer with
//! `--database-pooler transaction`. Tests' own direct checks (`postgres::database_url`,
//! `storage`, `locks`) still go straight to PostgreSQL.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kraiter_contacts::config::{DatabasePooler, ServeArgs};
use sqlx::postgres::PgConnectOptions;

use super::postgres::{self, chown_to_postgres, free_port, is_root, spawn_watchdog};

tokio::task_local! {
    static VIA_PGBOUNCER: ();
}

/// Runs a conformance test with its apps behind PgBouncer.
pub async fn scope<F: std::future::Future>(test: F) -> F::Output {
    VIA_PGBOUNCER.scope((), test).await
}

/// Inside `scope` (not in tasks the test spawns).
pub fn active() -> bool {
    VIA_PGBOUNCER.try_with(|_| ()).is_ok()
}

struct Bouncer {
    /// PostgreSQL's `host:port`, as the cluster's URLs spell it.
    server: String,
    /// PgBouncer's `host:port`.
    listen: String,
    user: String,
}

/// PgBouncer's `SHOW CLIENTS` (its admin console), as psql prints it.
pub fn show_clients() -> String {
    let bouncer = bouncer();
    let (host, port) = bouncer.listen.split_once(':').expect("host:port");
    let out = Command::new("psql")
        .args(["-At", "-h", host, "-p", port, "-U", &bouncer.user])
        .args(["-d", "pgbouncer", "-c", "SHOW CLIENTS"])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "SHOW CLIENTS failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BINARY.get_or_init(|| {
        let path = PathBuf::from("/usr/sbin/pgbouncer");
        if path.exists() {
            return Ok(path);
        }
        if !is_root() {
            return Err("PgBouncer is not installed: `apt-get install pgbouncer`".into());
        }
        let status = Command::new("sh")
            .args([
                "-c",
                "apt-get install -y -qq pgbouncer >/dev/null 2>&1 || \
                 (apt-get update -qq && apt-get install -y -qq pgbouncer)",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|err| format!("cannot run apt-get: {err}"))?;
        if status.success() && path.exists() {
            Ok(path)
        } else {
            Err(format!("installing pgbouncer failed: {status}"))
        }
    });
    found.clone().unwrap_or_else(|err| panic!("{err}"))
}

fn bouncer() -> &'static Bouncer {
    static BOUNCER: OnceLock<Bouncer> = OnceLock::new();
    BOUNCER.get_or_init(start)
}

fn start() -> Bouncer {
    let binary = binary();
    let url = postgres::database_url();
    let options = PgConnectOptions::from_str(&url).expect("the test database URL parses");
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    let user = options.get_username().to_owned();
    // PgBouncer logs in to PostgreSQL with the password of its auth file.
    // (A password with URL escapes is not decoded: the throwaway cluster has none.)
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(credentials, _)| credentials.split_once(':'))
        .map_or("", |(_, password)| password);
    let dir = tempfile::Builder::new()
        .prefix("kraiter-test-pgbouncer-")
        .tempdir()
        .expect("a directory for PgBouncer")
        .keep();
    let listen_port = free_port();
    // The README's settings (section PgBouncer), with loopback and test paths.
    let config = format!(
        "[databases]\n\
         * = host={host} port={port}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {listen_port}\n\
         unix_socket_dir =\n\
         pool_mode = transaction\n\
         ignore_startup_parameters = extra_float_digits\n\
         auth_type = trust\n\
         auth_file = {dir}/userlist.txt\n\
         admin_users = {user}\n\
         max_client_conn = 2000\n\
         default_pool_size = 40\n\
         logfile = {dir}/pgbouncer.log\n\
         pidfile = {dir}/pgbouncer.pid\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("pgbouncer.ini"), config).expect("write pgbouncer.ini");
    std::fs::write(
        dir.join("userlist.txt"),
        format!("\"{user}\" \"{password}\"\n"),
    )
    .expect("write userlist.txt");
    let run_as = if is_root() {
        chown_to_postgres(&dir);
        "runuser -u postgres -- "
    } else {
        ""
    };
    // The watchdog owns PgBouncer: it starts it, waits for this process to exit, then
    // stops it and deletes the directory.
    let script = format!(
        "{run_as}'{binary}' '{dir}/pgbouncer.ini' >'{dir}/stdout.log' 2>&1 & \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         kill \"$(cat '{dir}/pgbouncer.pid')\" 2>/dev/null; sleep 1; rm -rf '{dir}'",
        binary = binary.display(),
        dir = dir.display(),
        pid = std::process::id(),
    );
    spawn_watchdog(&script);
    let listen = format!("127.0.0.1:{listen_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&listen).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default();
            let log2 = std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
            panic!("PgBouncer did not start within 30s:\n{log}\n{log2}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Bouncer {
        server: format!("{host}:{port}"),
        listen,
        user,
    }
}

/// `url` (a database of the shared cluster) reached through PgBouncer instead; `None`
/// for a URL of another server.
pub fn url_for(url: &str) -> Option<String> {
    let bouncer = bouncer();
    let at = format!("@{}/", bouncer.server);
    url.contains(&at)
        .then(|| url.replacen(&at, &format!("@{}/", bouncer.listen), 1))
}

/// Points `args` at PgBouncer in front of its database, with
/// `--database-pooler transaction`, after migrating that database directly (the
/// service does not migrate through a transaction pooler). A database on another
/// server (a test's own cluster) is left as it is.
pub async fn route(args: &mut ServeArgs) {
    let direct = args.store.database_url.clone();
    let Some(pooled) = url_for(&direct) else {
        return;
    };
    migrate(&direct).await;
    args.store.database_url = pooled;
    args.store.database_pooler = DatabasePooler::Transaction;
}

/// Runs the migrations of `direct` once per database.
pub async fn migrate(direct: &str) {
    static MIGRATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let done = |url: &str| MIGRATED.lock().unwrap().iter().any(|done| done == url);
    if done(direct) {
        return;
    }
    let options = kraiter_contacts::store::ConnectOptions {
        max_connections: 1,
        ..Default::default()
    };
    let store = kraiter_contacts::store::connect(direct, &options)
        .await
        .expect("migrate the test database directly");
    drop(store);
    MIGRATED.lock().unwrap().push(direct.to_owned());
}
