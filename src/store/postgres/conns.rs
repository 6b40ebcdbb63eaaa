//! The store's database connections.
//!
//! sqlx's pool tests a connection with a round trip when it hands it out and again
//! when it takes it back: two extra round trips around every query, a large share
//! of a point read's cost (see BENCHMARKS.md). Here a
//! connection whose work finished cleanly (`Conn::done`) goes straight back to the
//! idle list. One whose work was interrupted (a cancelled call, an error, a
//! transaction left open) is tested off the caller's path, as sqlx would, before it
//! is reused; one that sat idle a while is tested before it is handed out.
//! At most `max` connections exist, and a caller waits at most `acquire_timeout`.
//!
//! Behind a pooler in transaction mode (PgBouncer `pool_mode = transaction`), a
//! server connection belongs to this client only inside an explicit transaction: at
//! every ReadyForQuery outside one the pooler may hand it to another client. sqlx
//! sends each statement as Parse/Describe/Sync and then Bind/Execute/Sync (two such
//! points), and names it (`sqlx_s_N`, unique only per client connection) unless a
//! query says `persistent(false)`; a prepared name lives on the server connection
//! past the transaction, and sqlx's cache of names on the client connection. Its
//! `statement_cache_capacity(0)` alone still names every statement, and never closes
//! it. So in that mode (`pooled`) every checkout is one transaction: `BEGIN` when it
//! is handed out, `COMMIT` (or `ROLLBACK`) when it ends, so Parse and Bind meet one
//! server connection; the cache is off, and every end of a transaction also runs
//! `DEALLOCATE ALL`, in the same message, so no name a checkout prepared is left for
//! another client to meet. (Marking every query `persistent(false)` instead would
//! touch every statement the backends share, and miss sqlx's own queries.)

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgTransactionManager};
use sqlx::{Connection, Executor, Row, TransactionManager};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::classify;
use crate::store::{ConnectOptions, PoolUsage, StoreError, StoreResult};

/// An idle connection unused this long is pinged before it is handed out, since a
/// database restart or a firewall may have cut it meanwhile.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// How long the test of an interrupted connection may take before it is dropped.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an interrupted connection may stay busy before its statement is
/// cancelled: a call that went away must not leave the database working for it.
const BUSY_BEFORE_CANCEL: Duration = Duration::from_millis(50);
/// How long a cancel request may take (it waits for the connection that sends it).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub(crate) struct Conns {
    inner: Arc<Inner>,
}

struct Inner {
    options: PgConnectOptions,
    idle: Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
    max: u32,
    acquire_timeout: Duration,
    /// Connections open now, idle or in use.
    open: AtomicU32,
    /// A connection of its own, outside `max`, that sends `pg_cancel_backend` for
    /// statements whose callers went away; opened on first use.
    canceller: tokio::sync::Mutex<Option<PgConnection>>,
    /// Behind a pooler in transaction mode: each checkout is one transaction.
    pooled: bool,
}

/// Ends a pooled checkout's work. `DEALLOCATE ALL` comes first: in a failed
/// transaction it fails, and the `COMMIT` after it is then not run.
const POOLED_COMMIT: &str = "DEALLOCATE ALL; COMMIT";
/// Ends a pooled checkout that failed or was interrupted (ROLLBACK cannot fail; the
/// names go in an implicit transaction of the same message).
const POOLED_ROLLBACK: &str = "ROLLBACK; DEALLOCATE ALL";

struct Idle {
    conn: PgConnection,
    /// The server process behind it, to cancel its statement (none when pooled).
    pid: Option<i32>,
    since: Instant,
}

/// A connection in use. Call `done` once its work finished cleanly; dropped without
/// it, the connection is tested before anyone reuses it.
pub(crate) struct Conn {
    inner: Arc<Inner>,
    conn: Option<PgConnection>,
    /// The server process running its statements. When pooled, known only while
    /// this checkout's transaction holds that process: a cancel sent later could
    /// reach another client's statement.
    pid: Option<i32>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Conns {
    /// Checks the URL and opens the first connection, so a bad URL or an unreachable
    /// database fails at start-up.
    pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let conns = Self::lazy(url, options)?;
        conns.get().await?.done().await?;
        Ok(conns)
    }

    /// Checks the URL only: connections open on first use (a read replica may be
    /// down when the service starts).
    pub fn lazy(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|err| StoreError::Config(format!("invalid postgres url: {err}")))?;
        let pooled = options.transaction_pooler;
        if pooled {
            connect = connect.statement_cache_capacity(0);
        }
        let max = options.max_connections.max(1);
        Ok(Self {
            inner: Arc::new(Inner {
                options: connect,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(max as usize)),
                max,
                acquire_timeout: options.acquire_timeout,
                open: AtomicU32::new(0),
                canceller: tokio::sync::Mutex::new(None),
                pooled,
            }),
        })
    }

    /// Behind a pooler in transaction mode.
    pub fn pooled(&self) -> bool {
        self.inner.pooled
    }

    /// A connection: an idle one if any, else a new one; UNAVAILABLE when none is
    /// free within the acquire timeout or the database cannot be reached.
    pub async fn get(&self) -> StoreResult<Conn> {
        let inner = &self.inner;
        tokio::time::timeout(inner.acquire_timeout, self.get_untimed())
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))?
    }

    async fn get_untimed(&self) -> StoreResult<Conn> {
        let inner = &self.inner;
        let mut permit = inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        loop {
            let idle = inner.lock_idle().pop();
            let Some(Idle { conn, pid, since }) = idle else {
                break;
            };
            // Handed out before the ping, so a caller that gives up mid-ping leaves the
            // connection to `Drop`, which accounts for it.
            let mut conn = self.hand_out(conn, pid, permit);
            if inner.pooled {
                // The BEGIN tests it as a ping would.
                if conn.begin_pooled().await.is_ok() {
                    return Ok(conn);
                }
            } else if since.elapsed() < IDLE_BEFORE_PING || conn.ping().await.is_ok() {
                return Ok(conn);
            }
            permit = conn.discard();
        }
        let mut conn = PgConnection::connect_with(&inner.options)
            .await
            .map_err(classify)?;
        let pid = if inner.pooled {
            None
        } else {
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
                .map_err(classify)?;
            Some(pid)
        };
        inner.open.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.hand_out(conn, pid, permit);
        if inner.pooled {
            conn.begin_pooled().await?;
        }
        Ok(conn)
    }

    fn hand_out(&self, conn: PgConnection, pid: Option<i32>, permit: OwnedSemaphorePermit) -> Conn {
        Conn {
            inner: self.inner.clone(),
            conn: Some(conn),
            pid,
            permit: Some(permit),
        }
    }

    pub fn usage(&self) -> PoolUsage {
        let idle = self.inner.lock_idle().len() as u32;
        PoolUsage {
            max: self.inner.max,
            open: self.inner.open.load(Ordering::Relaxed),
            idle,
        }
    }
}

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn return_idle(&self, conn: PgConnection, pid: Option<i32>) {
        self.lock_idle().push(Idle {
            conn,
            pid,
            since: Instant::now(),
        });
    }

    /// Asks the server to cancel what process `pid` runs. Best effort: on any
    /// failure the statement runs to its end, as it would without this. (The
    /// protocol's CancelRequest, which PgBouncer routes by client, needs the backend
    /// key that sqlx keeps private.)
    async fn cancel(&self, pid: i32) {
        let cancelled = tokio::time::timeout(CANCEL_TIMEOUT, async {
            let mut canceller = self.canceller.lock().await;
            if canceller.is_none() {
                *canceller = PgConnection::connect_with(&self.options).await.ok();
            }
            let conn = canceller.as_mut()?;
            // One simple-protocol message: through a pooler in transaction mode a
            // parameter would be bound in a second one, maybe on another server.
            let sent = conn
                .execute(format!("SELECT pg_cancel_backend({pid})").as_str())
                .await;
            if sent.is_err() {
                *canceller = None;
            }
            Some(())
        })
        .await;
        if !matches!(cancelled, Ok(Some(()))) {
            tracing::debug!(pid, "could not cancel an abandoned statement");
        }
    }

    /// Tests an interrupted connection off the caller's path: a ping drains what
    /// the work left (rows of a dropped query, the ROLLBACK of a dropped
    /// transaction) and proves it alive. A statement still running after
    /// `BUSY_BEFORE_CANCEL` is cancelled first, so an abandoned call (a client gone,
    /// a deadline passed) stops its database work instead of running to the end.
    /// When pooled, the ping (a Sync) does not end the checkout's transaction, so the
    /// server process stays this connection's until the ROLLBACK after it: a cancel
    /// reaches only its statement. Otherwise a transaction the work left open without
    /// sqlx knowing is ended (`end_stray_transaction`).
    async fn recover(&self, mut conn: PgConnection, pid: Option<i32>) {
        let alive = {
            let ping = conn.ping();
            tokio::pin!(ping);
            match tokio::time::timeout(BUSY_BEFORE_CANCEL, &mut ping).await {
                Ok(pinged) => pinged.is_ok(),
                Err(_) => {
                    if let Some(pid) = pid {
                        self.cancel(pid).await;
                    }
                    tokio::time::timeout(RECOVER_TIMEOUT, &mut ping)
                        .await
                        .is_ok_and(|pinged| pinged.is_ok())
                }
            }
        };
        let alive = alive
            && if self.pooled {
                tokio::time::timeout(RECOVER_TIMEOUT, conn.execute(POOLED_ROLLBACK))
                    .await
                    .is_ok_and(|ended| ended.is_ok())
            } else {
                tokio::time::timeout(RECOVER_TIMEOUT, end_stray_transaction(&mut conn))
                    .await
                    .unwrap_or(false)
            };
        if alive {
            self.return_idle(conn, if self.pooled { None } else { pid });
        } else {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whether a server transaction is open on the connection while sqlx counts none.
/// The question is one simple query, whose implicit transaction starts with it:
/// only inside a block opened by an earlier statement did the transaction start
/// before the statement.
const IN_OPEN_BLOCK: &str = "SELECT transaction_timestamp() < statement_timestamp()";

/// Leaves an interrupted connection outside any transaction, or says it cannot:
/// then it is closed, not reused.
///
/// sqlx counts a transaction only once its `BEGIN` has been answered. A call that
/// goes away in that round trip leaves the server inside a transaction that
/// nothing will end (sqlx's rollback on drop sees none), and every later statement
/// on the connection, single-statement writes included, would run inside it:
/// answered as done and never committed, then lost when the connection closes. An
/// interrupted `COMMIT` leaves the opposite (sqlx counting a transaction the server
/// ended), which would turn the next `BEGIN` into a `SAVEPOINT`; such a connection
/// is closed.
async fn end_stray_transaction(conn: &mut PgConnection) -> bool {
    if PgTransactionManager::get_transaction_depth(conn) != 0 {
        return false;
    }
    let open = match conn.fetch_one(IN_OPEN_BLOCK).await {
        Ok(row) => row.try_get::<bool, _>(0).ok(),
        // A block whose statement failed refuses every statement but its end.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("25P02") => Some(true),
        Err(_) => None,
    };
    match open {
        Some(false) => true,
        Some(true) => conn.execute("ROLLBACK").await.is_ok(),
        None => false,
    }
}

impl Conn {
    /// The work finished and the connection is ready for the next: straight back to
    /// the idle list. When pooled, the checkout's transaction commits first, and its
    /// error is the caller's (the work may not have been saved).
    pub async fn done(mut self) -> StoreResult<()> {
        if self.inner.pooled {
            // From the COMMIT on, the server process may serve another client.
            self.pid = None;
            // On error `self` is dropped: the connection is tested and rolled back.
            let conn: &mut PgConnection = &mut self;
            conn.execute(POOLED_COMMIT).await.map_err(classify)?;
        }
        if let Some(conn) = self.conn.take() {
            self.inner.return_idle(conn, self.pid);
        }
        Ok(())
    }

    /// Ends a one-statement use with the statement's outcome. After success, or an
    /// error the database reported (the connection is then ready for the next
    /// statement), the connection goes back to the idle list; after any other error
    /// it is tested first. When pooled, a database error left the transaction
    /// failed: it is rolled back off the caller's path, as an interrupted one is.
    pub async fn finish<T>(self, result: Result<T, sqlx::Error>) -> StoreResult<T> {
        match &result {
            Ok(_) => self.done().await?,
            Err(sqlx::Error::Database(_)) if !self.inner.pooled => self.done().await?,
            Err(_) => drop(self),
        }
        result.map_err(classify)
    }

    /// Behind a pooler in transaction mode: this checkout is a transaction.
    pub fn pooled(&self) -> bool {
        self.inner.pooled
    }

    /// Opens a pooled checkout's transaction, and learns which server process holds
    /// it, in one message.
    async fn begin_pooled(&mut self) -> StoreResult<()> {
        let conn: &mut PgConnection = self;
        let row = conn
            .fetch_one("BEGIN; SELECT pg_backend_pid()")
            .await
            .map_err(classify)?;
        self.pid = Some(row.try_get(0).map_err(classify)?);
        Ok(())
    }

    /// Closes a dead connection, keeping the permit for another.
    fn discard(mut self) -> OwnedSemaphorePermit {
        self.conn = None;
        self.inner.open.fetch_sub(1, Ordering::Relaxed);
        self.permit
            .take()
            .expect("a connection handed out holds its permit until dropped")
    }
}

impl std::ops::Deref for Conn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("a connection handed out is present until dropped")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
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
        // Interrupted: tested (and its statement cancelled) before reuse. The permit
        // is held meanwhile, so `max` is never exceeded.
        let (pid, permit) = (self.pid, self.permit.take());
        runtime.spawn(async move {
            inner.recover(conn, pid).await;
            drop(permit);
        });
    }
}
