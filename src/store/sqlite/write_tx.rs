//! How a SQLite write transaction holds its connection. Its statements are shared
//! (`common::SqlWriteTx`); `BEGIN IMMEDIATE` holds the database's write lock from
//! the first statement, so the `lock_*` reads are plain reads: nothing can change a
//! row between a read and the write that follows it.

use async_trait::async_trait;
use sqlx::{Executor, Sqlite, SqliteConnection};

use super::classify;
use super::conns::{Conn, Conns};
use crate::store::StoreResult;
use crate::store::common::TxConn;

/// A transaction on the single writer connection, begun and ended with plain
/// statements (sqlx's `begin_with` costs another exchange with the connection's
/// worker thread to check the custom BEGIN). Dropped before `commit`, its connection
/// is checked off the caller's path (`conns.rs`), which rolls the transaction back
/// before anyone else writes.
pub(crate) struct SqliteTx(Conn);

impl SqliteTx {
    /// Takes the write lock at once (see the module's comment).
    pub(super) async fn begin(writer: &Conns) -> StoreResult<Self> {
        let mut conn = writer.get().await?;
        (&mut *conn)
            .execute("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        Ok(Self(conn))
    }
}

#[async_trait]
impl TxConn for SqliteTx {
    type Db = Sqlite;

    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.0
    }

    async fn commit(mut self) -> StoreResult<()> {
        (&mut *self.0).execute("COMMIT").await.map_err(classify)?;
        self.0.done();
        Ok(())
    }
}
