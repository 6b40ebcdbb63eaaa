//! A database lock held from outside the service, to make calls block for as long
//! as a test needs: a row lock on one contact on PostgreSQL (other tests sharing the
//! database are not disturbed), the write lock of the app's own file on SQLite.

use sqlx::Connection;

use super::TestApp;
use super::wait::{PATIENCE, eventually};

pub enum WriteLock {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

/// Blocks updates of `contact` (and, on SQLite, every write) until released.
pub async fn hold(app: &TestApp, contact: &str) -> WriteLock {
    if app.database_url.starts_with("postgres") {
        hold_row(
            app,
            "SELECT 1 FROM contacts WHERE id = $1 FOR UPDATE",
            contact,
        )
        .await
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
            .await
            .expect("open the database file to lock");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .expect("take the write lock");
        WriteLock::Sqlite(conn)
    }
}

/// On PostgreSQL, blocks every create of `tenant`: an insert's foreign-key check
/// must share the tenant's row, which this holds for update.
pub async fn hold_tenant(app: &TestApp, tenant: &str) -> WriteLock {
    hold_row(
        app,
        "SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE",
        tenant,
    )
    .await
}

/// The row `select` finds by `key`, locked in a transaction of its own.
async fn hold_row(app: &TestApp, select: &str, key: &str) -> WriteLock {
    let mut conn = sqlx::PgConnection::connect(&app.database_url)
        .await
        .expect("connect to lock");
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query(select)
        .bind(key)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|err| panic!("lock the row of {key}: {err}"));
    WriteLock::Postgres(conn)
}

impl WriteLock {
    /// On PostgreSQL, how many sessions wait on this lock (`pg_blocking_pids`); `None`
    /// on SQLite, whose file lock shows no waiters (a writer waiting on it holds the
    /// app's one write connection instead: see `wait_for_waiter`).
    pub async fn waiters(&mut self) -> Option<i64> {
        let Self::Postgres(conn) = self else {
            return None;
        };
        // This session's view of pg_stat_activity is kept for its transaction.
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await
            .expect("a fresh view of the sessions");
        let waiting = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))",
        )
        .fetch_one(conn)
        .await
        .expect("count the sessions this lock blocks");
        Some(waiting)
    }

    /// Waits until a call of `app` waits on this lock: on PostgreSQL a session blocked
    /// by it. On SQLite, whose file lock shows no waiters, a connection of the app lent
    /// out on consecutive polls over 50 ms: the writer waiting for the file lock, as
    /// long as nothing else of the app uses the database meanwhile (tests turn health
    /// probes off with `quiet_health`); the call's key check, on a read connection
    /// before it, is over in well under a millisecond.
    pub async fn wait_for_waiter(&mut self, app: &TestApp, what: &str) {
        let what = format!("{what}: a call waits on the lock");
        if matches!(self, Self::Sqlite(_)) {
            return wait_for_steady_use(app, &what).await;
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.waiters().await < Some(1) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {PATIENCE:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// On PostgreSQL, sessions waiting for an advisory lock held by a session that
    /// waits on this lock: a pipelined import's batch that has done its work and
    /// waits for the batch held up here to commit (`app::import`). `None` on SQLite.
    pub async fn turn_waiters(&mut self) -> Option<i64> {
        let Self::Postgres(conn) = self else {
            return None;
        };
        // This session's view of pg_stat_activity is kept for its transaction.
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await
            .expect("a fresh view of the sessions");
        let waiting = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity w \
             WHERE w.wait_event_type = 'Lock' AND w.wait_event = 'advisory' \
             AND EXISTS (SELECT 1 FROM pg_stat_activity b \
                 WHERE b.pid = ANY(pg_blocking_pids(w.pid)) \
                 AND pg_backend_pid() = ANY(pg_blocking_pids(b.pid)))",
        )
        .fetch_one(conn)
        .await
        .expect("count the sessions waiting behind this lock's waiter");
        Some(waiting)
    }

    pub async fn release(self) {
        match self {
            Self::Postgres(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("unlock");
            }
            Self::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("unlock");
            }
        }
    }
}

/// Waits until no database connection of the app is lent out, or panics after `within`.
pub async fn pool_goes_idle(app: &TestApp, within: std::time::Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let usage = app.store.pool_usage();
        if usage.open == usage.idle {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} connections still in use after {within:?}: {usage:?}",
            usage.open - usage.idle
        );
        // Polling: the pool has no event for "a connection came back".
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until a database connection of `app` is lent out on 5 polls in a row.
async fn wait_for_steady_use(app: &TestApp, what: &str) {
    let mut seen = 0;
    eventually(PATIENCE, what, || {
        let usage = app.store.pool_usage();
        seen = if usage.open > usage.idle { seen + 1 } else { 0 };
        let steady = seen >= 5;
        async move { steady.then_some(()) }
    })
    .await
}
