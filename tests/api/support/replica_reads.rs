//! `replicated!` runs the list, search, filter and timeline conformance tests a fourth
//! time, as `replica::<name>`, with their servers' heavy reads on a hot standby
//! (`--database-read-url`): issue 18 asks that the suites themselves pass through a
//! replica, not only the replica tests' own checks.
//!
//! A primary and a standby of their own, made once per test process (the pair in
//! `standby` is stopped and paused by the read-replica tests). Each test gets a
//! database of its own whose sessions commit with `synchronous_commit = remote_apply`
//! (`synchronous_standby_names = '*'` on the primary), so a write the test sees
//! acknowledged is already visible on the standby: the suites' read-after-write
//! assertions hold without sleeping, and a replica that served stale pages would
//! still fail them. After the test, the standby's `pg_stat_statements` must show
//! statements of that database: a suite that silently read from the primary fails.

use kraiter_contacts::config::ServeArgs;

use super::cluster::TestCluster;
use super::postgres::psql;
use super::standby::{STATEMENT_STATS, connect};

tokio::task_local! {
    static DATABASE: std::sync::OnceLock<String>;
}

struct SyncPair {
    primary: TestCluster,
    standby: TestCluster,
}

static PAIR: tokio::sync::OnceCell<SyncPair> = tokio::sync::OnceCell::const_new();

async fn pair() -> &'static SyncPair {
    PAIR.get_or_init(|| async {
        tokio::task::spawn_blocking(|| {
            let primary = TestCluster::start_new_with(STATEMENT_STATS);
            psql(
                &primary.url("kraiter"),
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
            );
            // No standby can confirm a commit before it exists: make it synchronous
            // only once it streams. (`-c synchronous_commit=off` on the command line
            // keeps every other database asynchronous.)
            let mut settings = STATEMENT_STATS.to_vec();
            // Vacuum on the primary must not cancel a page being read on the standby.
            settings.push("hot_standby_feedback=on");
            let standby = TestCluster::standby_of(&primary, &settings);
            psql(
                &primary.url("postgres"),
                "ALTER SYSTEM SET synchronous_standby_names = '*'",
            );
            psql(&primary.url("postgres"), "SELECT pg_reload_conf()");
            wait_until_synchronous(&primary);
            SyncPair { primary, standby }
        })
        .await
        .expect("start the synchronous primary and standby")
    })
    .await
}

/// Runs a conformance test with its apps' heavy reads on the standby, then checks
/// that the standby really served them.
pub async fn scope<F: std::future::Future>(test: F) -> F::Output {
    DATABASE
        .scope(std::sync::OnceLock::new(), async {
            let out = test.await;
            if let Some(database) = DATABASE.with(|db| db.get().cloned()) {
                let served = standby_statements(&database).await;
                assert!(
                    served > 0,
                    "no statement of database {database} ran on the standby: the suite read from the primary"
                );
            }
            out
        })
        .await
}

/// Inside `scope` (not in tasks the test spawns).
pub fn active() -> bool {
    DATABASE.try_with(|_| ()).is_ok()
}

/// Points `args` at the test's database on the synchronous primary, with the standby
/// as its read replica. Every app of one test shares the database.
pub async fn route(args: &mut ServeArgs) {
    let pair = pair().await;
    let database = match DATABASE.with(|db| db.get().cloned()) {
        Some(name) => name.clone(),
        None => {
            let name = format!(
                "kraiter_replicated_{}",
                ulid::Ulid::new().to_string().to_lowercase()
            );
            let admin = pair.primary.url("kraiter");
            psql(&admin, &format!("CREATE DATABASE {name}"));
            psql(
                &admin,
                &format!("ALTER DATABASE {name} SET synchronous_commit = remote_apply"),
            );
            DATABASE
                .with(|db| db.set(name.clone()))
                .expect("set once per test");
            name
        }
    };
    args.store.database_url = pair.primary.url(&database);
    args.replicas.database_read_url = vec![pair.standby.url(&database)];
}

/// Statements of `database` the standby ran that read data (not the replica
/// checks' own queries).
async fn standby_statements(database: &str) -> i64 {
    let pair = pair().await;
    let mut db = connect(&pair.standby.url("kraiter")).await;
    sqlx::query_scalar(
        "SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s \
         JOIN pg_database d ON d.oid = s.dbid \
         WHERE d.datname = $1 AND s.query ILIKE '%from%' AND s.query NOT ILIKE '%pg\\_%'",
    )
    .bind(database)
    .fetch_one(&mut db)
    .await
    .expect("read the standby's pg_stat_statements")
}

/// Until the primary counts the standby as synchronous: before that a commit would
/// not wait for it, and a read right after a write could miss it.
fn wait_until_synchronous(primary: &TestCluster) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("psql")
            .args(["-At", &primary.url("postgres")])
            .args(["-c", "SELECT sync_state FROM pg_stat_replication"])
            .output()
            .expect("run psql");
        if String::from_utf8_lossy(&out.stdout).trim() == "sync" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the standby did not become synchronous: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
