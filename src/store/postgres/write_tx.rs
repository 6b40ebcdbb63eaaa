//! How a PostgreSQL write transaction holds its connection. Its statements are
//! shared (`common::SqlWriteTx`): row locks (`FOR UPDATE`) order concurrent writes
//! about one record, and the unique index on `(tenant_id, email_key)` decides races
//! between creators of one address (its name in the error says which key it was).
//!
//! An import batch defers the GIN indexes' maintenance to its end: its first batch
//! statement raises the transaction's pending-list limit (the database default,
//! migration 0010, stays small for every other write), and its commit first merges
//! the pending lists of the indexes it wrote. Searches read the pending list too, so
//! they are exact either way; the merge keeps the next searches from scanning the
//! batch's rows linearly, and every later write from paying for them.

use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::postgres::{PgConnection, PgTransactionManager};
use sqlx::{Executor, Postgres, Row, TransactionManager};

use super::classify;
use super::conns::Conn;
use crate::store::StoreResult;
use crate::store::common::TxConn;

/// A transaction on a connection of the store's own pool. Dropped before `commit`,
/// it queues a ROLLBACK, which the pool runs while testing the interrupted connection.
pub(crate) struct PgTx {
    conn: Option<Conn>,
    /// A batch statement wrote contacts: merge the pending lists before the commit.
    batch: bool,
}

/// Raises this transaction's limit: a batch of 1,000 contacts' trigrams fits.
const RAISE_PENDING_LIMIT: &str = "SET LOCAL gin_pending_list_limit = '16MB'";

/// Merges the pending lists of the GIN indexes a batch writes, those this role owns
/// (`gin_clean_pending_list` needs the owner; its error would abort the
/// transaction, so the others are skipped, and counted).
const MERGE_PENDING: &str = "SELECT count(*) FILTER (WHERE NOT owned) AS skipped, \
     coalesce(sum(CASE WHEN owned THEN gin_clean_pending_list(oid) END), 0) AS merged \
     FROM (SELECT oid, pg_has_role(relowner, 'USAGE') AS owned FROM pg_class \
     WHERE oid IN (to_regclass('contacts_search_tenant'), \
     to_regclass('contacts_properties_tenant'))) AS gin";

/// The first key of the import-order locks (`pg_advisory_xact_lock(class, key)`):
/// their own class, apart from any other advisory lock of the database.
const ORDER_LOCK_CLASS: i32 = 0x4b49_4f4c;

/// The skipped merge is logged once per process, not once per batch.
static SKIP_LOGGED: AtomicBool = AtomicBool::new(false);

impl PgTx {
    pub(super) async fn begin(mut conn: Conn) -> StoreResult<Self> {
        // A pooled checkout is a transaction already (see `conns.rs`); sqlx does not
        // count it, so its commit below does nothing and `Conn::done` commits.
        if !conn.pooled() {
            PgTransactionManager::begin(&mut conn, None)
                .await
                .map_err(classify)?;
        }
        Ok(Self {
            conn: Some(conn),
            batch: false,
        })
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            PgTransactionManager::start_rollback(conn);
        }
    }
}

#[async_trait]
impl TxConn for PgTx {
    type Db = Postgres;

    fn conn(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("the connection is held until commit or drop")
    }

    async fn batch_write(&mut self) -> StoreResult<()> {
        if !self.batch {
            self.conn()
                .execute(RAISE_PENDING_LIMIT)
                .await
                .map_err(classify)?;
            self.batch = true;
        }
        Ok(())
    }

    // An advisory lock of the transaction: PostgreSQL releases it at the end of the
    // transaction, and a session waiting for it is in the wait graph its deadlock
    // detector searches. The key is bound as text, not a parameter: one simple
    // query, behind PgBouncer too.
    async fn order_lock(&mut self, key: u32, wait_only: bool) -> StoreResult<()> {
        let function = if wait_only {
            "pg_advisory_xact_lock_shared"
        } else {
            "pg_advisory_xact_lock"
        };
        // The key's bits as PostgreSQL's `integer`.
        let key = key as i32;
        let sql = format!("SELECT {function}({ORDER_LOCK_CLASS}, {key})");
        self.conn().execute(sql.as_str()).await.map_err(classify)?;
        Ok(())
    }

    async fn commit(mut self) -> StoreResult<()> {
        if self.batch {
            let row = self
                .conn()
                .fetch_one(MERGE_PENDING)
                .await
                .map_err(classify)?;
            let skipped: i64 = row.try_get("skipped").map_err(classify)?;
            if skipped > 0 && !SKIP_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    indexes = skipped,
                    "the service's database role does not own the GIN indexes of contacts, \
                     so import batches leave their pending lists unmerged: searches stay \
                     exact but scan them, and the next ordinary write that fills the list \
                     pays for its merge; run the service as the owner of the contacts \
                     table's indexes"
                );
            }
        }
        let mut conn = self
            .conn
            .take()
            .expect("the connection is held until commit or drop");
        PgTransactionManager::commit(&mut conn)
            .await
            .map_err(classify)?;
        conn.done().await
    }
}
