//! How a PostgreSQL write transaction holds its connection. Its statements are
//! shared (`common::SqlWriteTx`): row locks (`FOR UPDATE`) order concurrent writes
//! about one record, and the unique index on `(tenant_id, email_key)` decides races
//! between creators of one address (its name in the error says which key it was).

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgTransactionManager};
use sqlx::{Postgres, TransactionManager};

use super::classify;
use super::conns::Conn;
use crate::store::StoreResult;
use crate::store::common::TxConn;

/// A transaction on a connection of the store's own pool. Dropped before `commit`,
/// it queues a ROLLBACK, which the pool runs while testing the interrupted connection.
pub(crate) struct PgTx {
    conn: Option<Conn>,
}

impl PgTx {
    pub(super) async fn begin(mut conn: Conn) -> StoreResult<Self> {
        // A pooled checkout is a transaction already (see `conns.rs`); sqlx does not
        // count it, so its commit below does nothing and `Conn::done` commits.
        if !conn.pooled() {
            PgTransactionManager::begin(&mut conn, None)
                .await
                .map_err(classify)?;
        }
        Ok(Self { conn: Some(conn) })
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

    async fn commit(mut self) -> StoreResult<()> {
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
