//! The SQL both backends share. The two schemas hold the same tables and columns,
//! so most statements, their parameters and their rows are the same on both; what
//! differs is small and mechanical, and each backend states it once:
//!
//! - how values are stored (times, JSON): the newtypes of `types.rs` encode and
//!   decode them for either database;
//! - a few SQL fragments and the error classification: `Dialect`;
//! - where a statement gets its connection: `SqlStore` and `ConnSource` (`db.rs`),
//!   and how a write transaction holds one: `TxConn` (`write_tx.rs`).
//!
//! sqlx accepts `$n` parameters on SQLite too, so one statement text serves both.
//! `KeyStore`, `ActivityStore`, `ContactStore` and `WriteTx` are implemented here,
//! once, for any `SqlStore`. A backend makes its own way only the contact calls it
//! can make faster (`BackendContacts`: PostgreSQL's one-statement creates, merges
//! and coalesced point reads) and its contact search, which each database indexes
//! differently.

mod activity;
mod activity_tx;
mod batch;
mod changes;
mod contacts;
mod count;
mod db;
mod filter;
mod keys;
mod rows;
mod types;
mod write_tx;

pub(crate) use crate::store::ContactPage;
pub(crate) use batch::{ColumnKind, JsonColumn};
pub(crate) use changes::{ChangeSql, POSTGRES as POSTGRES_CHANGES, SQLITE as SQLITE_CHANGES};
pub(crate) use contacts::{
    BackendContacts, NewContact, Revised, batch_get_sql, batch_got, checked_view, create_contact,
    create_contacts, update_contact_if_revision, update_contacts_if_revision,
};
pub(crate) use db::{ConnSource, Get, Param, SqlDb, SqlText, Stmt};
pub(crate) use filter::id_floor_condition;
pub(crate) use filter::{
    Arg, Clause, JsonKind, bind_arg, containment, filter_condition, keyset, literal_key, order_by,
};
pub(crate) use keys::tenant_for_key;
pub(crate) use rows::{CONTACT_COLUMNS, contact_from_row, view_from_row};
pub(crate) use write_tx::{SqlWriteTx, TxConn};

use async_trait::async_trait;

use crate::domain::filter::{PropertyPath, Scalar};
use crate::domain::{ContactView, SearchTerm};
use crate::store::{ReadFrom, StoreError, StoreResult};

/// What differs between the databases' SQL, implemented for `sqlx::Postgres` and
/// `sqlx::Sqlite`.
pub(crate) trait Dialect: sqlx::Database {
    /// Appended to a read whose row the transaction goes on to write, so a
    /// concurrent writer of the row waits (empty where the transaction holds the
    /// database's write lock from its start).
    const FOR_UPDATE: &'static str;
    /// The function that returns the larger of two values.
    const GREATEST: &'static str;
    /// The hidden column that identifies a row of any table, for deletes in batches.
    const ROW_ID: &'static str;
    /// The statements of the change feed that differ (`changes.rs`).
    const CHANGES: &'static changes::ChangeSql;
    /// The current time as an SQL expression of the database's own, when the
    /// backend stamps rows with the database's clock; `None` where the service's
    /// clock is bound as a parameter instead (see `SqlText::now`, `Stmt::bind_now`).
    const NOW: Option<&'static str>;

    /// The condition that `column` is one of a `TextList` parameter's values; the
    /// parameter is written `?` (see `SqlText`).
    fn any_of(column: &str) -> String;

    /// The records of a JSON array parameter (`?`, bound as `JsonText`) as a table
    /// aliased `r` with `columns`, each read from the member of its name: how a batch
    /// of rows goes to the database as one parameter of one statement (`batch.rs`).
    fn json_rows(columns: &[JsonColumn]) -> String;

    /// Sorts driver errors into the kinds the API maps to status codes.
    fn classify(err: sqlx::Error) -> StoreError;

    /// Rows a statement inserted, updated or deleted.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// A contact from a row that starts with `CONTACT_COLUMNS` (a backend may read
    /// it faster than by column name).
    fn contact_view(row: &Self::Row) -> StoreResult<ContactView>;

    // Filters (issue 16; `filter.rs` renders them with these).

    /// Appended to a text expression so it compares in byte (code point) order.
    const BYTE_ORDER: &'static str;
    /// The function `f(haystack, needle)` that is the needle's position, 0 if absent.
    const FIND: &'static str;
    /// What turns a count statement into its plan, whose first line estimates its
    /// rows; `None` where the database keeps no statistics to estimate from.
    const EXPLAIN: Option<&'static str>;
    /// Whether `contact_counts` keeps each tenant's number of contacts (`count.rs`).
    const COUNTED: bool = false;

    /// The condition that the contact's indexed search text contains `term`.
    fn search_condition(out: &mut Clause, term: &SearchTerm);
    /// The condition that the property at `path` is present (or, `present` false,
    /// absent).
    fn json_exists(out: &mut Clause, path: &PropertyPath, present: bool);
    /// The condition that the property at `path` equals `value`, of its type.
    fn json_equals(out: &mut Clause, path: &PropertyPath, value: &Scalar);
    /// The property at `path` as an SQL value of `kind`: NULL when absent or of
    /// another type; text compares in byte order.
    fn json_typed(out: &mut Clause, path: &PropertyPath, kind: JsonKind);
    /// The condition `property <op> arg`, false unless the property is of `kind`.
    fn json_compare(out: &mut Clause, path: &PropertyPath, kind: JsonKind, op: &str, arg: Arg) {
        Self::json_typed(out, path, kind);
        out.push(&format!(" {op} ")).arg(arg);
    }
}

/// Deletes remembered requests and erased-request tombstones older than `before`,
/// at most `batch` of each, so a purge never holds locks for long; returns how many
/// rows went.
pub(crate) async fn purge_requests<S: SqlStore>(
    store: &S,
    before: chrono::DateTime<chrono::Utc>,
    batch: u32,
) -> StoreResult<u64> {
    let row_id = <S::Db as Dialect>::ROW_ID;
    let mut purged = 0;
    for (table, column) in [
        ("idempotency_keys", "created_at"),
        ("erased_requests", "erased_at"),
    ] {
        let sql = format!(
            "DELETE FROM {table} WHERE {row_id} IN \
             (SELECT {row_id} FROM {table} WHERE {column} < $1 LIMIT $2)"
        );
        let stmt = Stmt::<S::Db>::new(&sql)
            .bind(types::DbTime(before))
            .bind(i64::from(batch));
        purged += store.writes().execute(stmt).await?;
    }
    Ok(purged)
}

/// A backend as the shared SQL sees it: its database and where its statements run.
#[async_trait]
pub(crate) trait SqlStore: Send + Sync + 'static {
    type Db: SqlDb;
    type Conns: ConnSource<Db = Self::Db> + Clone;
    type Tx: TxConn<Db = Self::Db>;

    /// Connections for statements that only read, on the primary.
    fn reads(&self) -> &Self::Conns;

    /// Runs `read`, a heavy read (a list's page, a count) that may run anywhere
    /// `from` allows. A backend with read replicas tries a usable one first, and
    /// on an UNAVAILABLE from it (the replica died, or cancelled the statement in a
    /// conflict with recovery) runs `read` again on the next, the primary last: a
    /// read is safe to run again, and a list's page starts from its cursor.
    async fn read_heavy<T, F, Fut>(&self, from: ReadFrom, read: F) -> StoreResult<T>
    where
        T: Send,
        F: Fn(Self::Conns) -> Fut + Send + Sync,
        Fut: std::future::Future<Output = StoreResult<T>> + Send,
    {
        let _ = from;
        read(self.reads().clone()).await
    }
    /// Connections for single statements that write, outside a write transaction.
    fn writes(&self) -> &Self::Conns;
    /// A write transaction's connection, the transaction begun (see `SqlWriteTx`).
    async fn begin_tx(&self) -> StoreResult<Self::Tx>;
    /// Rung after a commit that recorded changes (`ChangeBell`).
    fn bell(&self) -> &crate::store::ChangeBell;
}
