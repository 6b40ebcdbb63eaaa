//! The SQLite store's connections, its own list rather than sqlx's pool.
//!
//! sqlx runs each SQLite connection on a worker thread of its own, and every
//! exchange with it is a hand-over between threads. Its pool adds two such exchanges
//! to every use: a ping when it hands a connection out (`test_before_acquire`) and
//! another when it takes it back (`return_to_pool`, not configurable). Here, as in
//! `postgres/conns.rs`, a connection whose work ended cleanly (`Conn::done`) goes
//! straight back to the idle list; one whose work was interrupted (a dropped call,
//! a driver error, a write transaction that did not commit) is checked off the
//! caller's path before reuse: a `ROLLBACK` queued behind whatever it was still
//! doing, which ends a transaction left open and proves the worker alive. A local
//! file cannot be cut off while idle, so idle connections are not pinged.
//! At most `max` connections exist, and a caller waits at most `acquire_timeout`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::classify;
use crate::store::{PoolUsage, StoreError, StoreResult};

/// How long the check of an interrupted connection may take before it is closed.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct Conns {
    inner: Arc<Inner>,
}

struct Inner {
    options: SqliteConnectOptions,
    idle: Mutex<Vec<SqliteConnection>>,
    permits: Arc<Semaphore>,
    max: u32,
    acquire_timeout: Duration,
    /// Connections open now, idle or in use.
    open: AtomicU32,
}

/// A connection in use. Call `done` once its work finished cleanly; dropped without
/// it, the connection is checked before anyone reuses it.
pub(crate) struct Conn {
    inner: Arc<Inner>,
    conn: Option<SqliteConnection>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Conns {
    /// Opens the first connection, so a bad path fails at start-up.
    pub async fn connect(
        options: SqliteConnectOptions,
        max: u32,
        acquire_timeout: Duration,
    ) -> StoreResult<Self> {
        let max = max.max(1);
        let conns = Self {
            inner: Arc::new(Inner {
                options,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(max as usize)),
                max,
                acquire_timeout,
                open: AtomicU32::new(0),
            }),
        };
        conns.get().await?.done();
        Ok(conns)
    }

    /// An idle connection if any, else a new one; UNAVAILABLE when none is free
    /// within the acquire timeout or the file cannot be opened.
    pub async fn get(&self) -> StoreResult<Conn> {
        tokio::time::timeout(self.inner.acquire_timeout, self.get_untimed())
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))?
    }

    async fn get_untimed(&self) -> StoreResult<Conn> {
        let inner = &self.inner;
        let permit = inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        let idle = inner.lock_idle().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = inner.options.connect().await.map_err(classify)?;
                inner.open.fetch_add(1, Ordering::Relaxed);
                conn
            }
        };
        Ok(Conn {
            inner: self.inner.clone(),
            conn: Some(conn),
            permit: Some(permit),
        })
    }

    pub fn usage(&self) -> PoolUsage {
        PoolUsage {
            max: self.inner.max,
            open: self.inner.open.load(Ordering::Relaxed),
            idle: self.inner.lock_idle().len() as u32,
        }
    }
}

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<SqliteConnection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Checks an interrupted connection: the worker runs commands in order, so the
    /// `ROLLBACK` answers once what the connection was doing has ended, and ends a
    /// transaction left open. "No transaction is active" is a database's answer
    /// too: the connection is fine. Anything else, or no answer in time, closes it.
    async fn recover(&self, mut conn: SqliteConnection) {
        let rolled_back = tokio::time::timeout(RECOVER_TIMEOUT, conn.execute("ROLLBACK")).await;
        match rolled_back {
            Ok(Ok(_)) | Ok(Err(sqlx::Error::Database(_))) => self.lock_idle().push(conn),
            _ => {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Conn {
    /// The work finished and the connection is ready for the next (no transaction
    /// open, no statement running): straight back to the idle list.
    pub fn done(mut self) {
        if let Some(conn) = self.conn.take() {
            self.inner.lock_idle().push(conn);
        }
    }

    /// Ends a one-statement use with the statement's outcome: after success or an
    /// error SQLite reported, the connection is ready for the next statement;
    /// after any other error it is checked first.
    pub fn finish<T>(self, result: Result<T, sqlx::Error>) -> StoreResult<T> {
        match &result {
            Ok(_) | Err(sqlx::Error::Database(_)) => self.done(),
            Err(_) => drop(self),
        }
        result.map_err(classify)
    }
}

impl std::ops::Deref for Conn {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn
            .as_ref()
            .expect("a connection handed out is present until dropped")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a connection handed out is present until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let inner = self.inner.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            inner.open.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        // Interrupted: checked before reuse, the permit held meanwhile so `max` is
        // never exceeded (and a writer never meets its own open transaction).
        let permit = self.permit.take();
        runtime.spawn(async move {
            inner.recover(conn).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Executor;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

    use super::Conns;
    use crate::store::StoreError;

    async fn writer(dir: &std::path::Path) -> Conns {
        let options = SqliteConnectOptions::new()
            .filename(dir.join("conns.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        Conns::connect(options, 1, Duration::from_millis(300))
            .await
            .expect("open")
    }

    async fn count(conns: &Conns) -> i64 {
        let mut conn = conns.get().await.expect("a connection");
        let n = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut *conn)
            .await
            .expect("count");
        conn.done();
        n
    }

    /// A transaction dropped before its commit is rolled back before the connection
    /// is handed out again, and meanwhile the one connection is not handed out twice.
    #[tokio::test]
    async fn an_interrupted_transaction_is_rolled_back_before_reuse() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conns = writer(dir.path()).await;
        let mut conn = conns.get().await.expect("a connection");
        (&mut *conn)
            .execute("CREATE TABLE t (x INTEGER)")
            .await
            .expect("create");
        conn.done();
        let mut conn = conns.get().await.expect("a connection");
        (&mut *conn)
            .execute("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            .await
            .expect("write");
        // While it is held, a second caller times out with UNAVAILABLE.
        let waited = conns.get().await.err();
        assert!(
            matches!(waited, Some(StoreError::Unavailable(_))),
            "{waited:?}"
        );
        drop(conn);
        assert_eq!(count(&conns).await, 0, "the dropped write was rolled back");
        let mut conn = conns.get().await.expect("a connection");
        (&mut *conn)
            .execute("BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT")
            .await
            .expect("a new transaction begins");
        conn.done();
        assert_eq!(count(&conns).await, 1);
        let usage = conns.usage();
        assert_eq!((usage.max, usage.open, usage.idle), (1, 1, 1));
    }
}
