//! How a SQLite write transaction holds its connection. Its statements are shared
//! (`common::SqlWriteTx`); `BEGIN IMMEDIATE` holds the database's write lock from
//! the first statement, so the `lock_*` reads are plain reads: nothing can change a
//! row between a read and the write that follows it.

use async_trait::async_trait;
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::classify;
use crate::domain::Contact;
use crate::store::common::{Stmt, TxConn};
use crate::store::{StoreError, StoreResult};

/// A transaction on the single writer connection; dropped before `commit`, sqlx
/// rolls it back. (A type of its own, without the lifetime parameter of sqlx's,
/// so that the compiler can tell its futures are `Send` in generic code.)
pub(crate) struct SqliteTx(Transaction<'static, Sqlite>);

impl SqliteTx {
    /// Takes the write lock at once (see the module's comment).
    pub(super) async fn begin(writer: &SqlitePool) -> StoreResult<Self> {
        let tx = writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        Ok(Self(tx))
    }
}

#[async_trait]
impl TxConn for SqliteTx {
    type Db = Sqlite;

    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.0
    }

    async fn commit(self) -> StoreResult<()> {
        self.0.commit().await.map_err(classify)
    }

    /// SQLite names no constraint in its errors, so a taken address is looked for
    /// first; inside the write lock, the answer holds until the write that follows.
    async fn check_email_free(&mut self, tenant: &str, contact: &Contact) -> StoreResult<()> {
        let taken = Stmt::<Sqlite>::new(
            "SELECT 1 FROM contacts WHERE tenant_id = $1 AND email_key = $2 AND id <> $3",
        )
        .bind(tenant)
        .bind(contact.email.key())
        .bind(contact.id.as_str())
        .fetch_optional(&mut self.0)
        .await?;
        match taken {
            Some(_) => Err(StoreError::Conflict { field: "email" }),
            None => Ok(()),
        }
    }
}
