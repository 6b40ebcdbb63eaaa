//! What lets one piece of sqlx code run on either database: the values it binds
//! and reads, how it runs a statement, and where it gets a connection.
//!
//! sqlx states what a database can do as bounds on other types (`&str: Encode<DB>`,
//! `&mut DB::Connection: Executor`), and Rust does not carry such bounds from a
//! trait to the code that uses it: every generic function would have to repeat
//! them. So each value the shared code binds or reads is a supertrait of `SqlDb`
//! (`Param`, `Get`), running a statement is a method of it, and the bounds that
//! make them work are written once, on the blanket impl. The shared code asks only
//! for `DB: SqlDb`.

use std::ops::DerefMut;

use async_trait::async_trait;
use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::Dialect;
use super::types::{DbJson, DbTime, JsonMap, JsonText, TextList};
use crate::store::{ListRows, StoreResult, collect_within};

pub(crate) type SqlQuery<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// `DB` binds a `T` as a statement parameter.
pub(crate) trait Param<'q, T>: Database {
    fn push(query: SqlQuery<'q, Self>, value: T) -> SqlQuery<'q, Self>;
}

impl<'q, T, DB> Param<'q, T> for DB
where
    DB: Database,
    T: 'q + Encode<'q, DB> + Type<DB>,
{
    fn push(query: SqlQuery<'q, Self>, value: T) -> SqlQuery<'q, Self> {
        query.bind(value)
    }
}

/// `DB` reads a column, by name, as a `T`.
pub(crate) trait Get<T>: Database {
    fn get(row: &Self::Row, column: &str) -> sqlx::Result<T>;
}

impl<T, DB> Get<T> for DB
where
    DB: Database,
    T: for<'r> Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    fn get(row: &DB::Row, column: &str) -> sqlx::Result<T> {
        row.try_get(column)
    }
}

/// A database the shared SQL runs on: the values it binds and reads, and its
/// statements run on a connection. Implemented for every database that can, i.e.
/// `Postgres` and `Sqlite`.
pub(crate) trait SqlDb:
    Dialect
    + for<'q> Param<'q, &'q str>
    + for<'q> Param<'q, Option<&'q str>>
    + for<'q> Param<'q, &'q [u8]>
    + for<'q> Param<'q, i64>
    + for<'q> Param<'q, f64>
    + for<'q> Param<'q, i32>
    + for<'q> Param<'q, bool>
    + for<'q> Param<'q, DbTime>
    + for<'q> Param<'q, Option<DbTime>>
    + for<'q> Param<'q, DbJson<&'q JsonMap>>
    + for<'q> Param<'q, JsonText<&'q str>>
    + for<'q> Param<'q, TextList<'q>>
    + for<'q> Param<'q, Option<DbJson<&'q JsonMap>>>
    + for<'q> Param<'q, Option<bool>>
    + for<'q> Param<'q, Option<i64>>
    + Get<String>
    + Get<Option<String>>
    + Get<Vec<u8>>
    + Get<i64>
    + Get<i32>
    + Get<bool>
    + Get<DbTime>
    + Get<Option<DbTime>>
    + Get<DbJson<JsonMap>>
    + Get<JsonText>
    + Get<Option<JsonText>>
    + Get<Option<String>>
    + Get<Option<i64>>
    + Get<Option<bool>>
{
    fn fetch_all<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: SqlQuery<'q, Self>,
    ) -> BoxFuture<'c, sqlx::Result<Vec<Self::Row>>>;

    fn fetch_optional<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: SqlQuery<'q, Self>,
    ) -> BoxFuture<'c, sqlx::Result<Option<Self::Row>>>;

    fn execute<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: SqlQuery<'q, Self>,
    ) -> BoxFuture<'c, sqlx::Result<Self::QueryResult>>;

    fn fetch<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: SqlQuery<'q, Self>,
    ) -> BoxStream<'c, sqlx::Result<Self::Row>>;
}

// The supertraits of `SqlDb` once more (an impl must state what it relies on),
// and what running a statement on a connection needs.
impl<DB> SqlDb for DB
where
    DB: Dialect
        + for<'q> Param<'q, &'q str>
        + for<'q> Param<'q, Option<&'q str>>
        + for<'q> Param<'q, &'q [u8]>
        + for<'q> Param<'q, i64>
        + for<'q> Param<'q, f64>
        + for<'q> Param<'q, i32>
        + for<'q> Param<'q, bool>
        + for<'q> Param<'q, DbTime>
        + for<'q> Param<'q, Option<DbTime>>
        + for<'q> Param<'q, DbJson<&'q JsonMap>>
        + for<'q> Param<'q, JsonText<&'q str>>
        + for<'q> Param<'q, TextList<'q>>
        + for<'q> Param<'q, Option<DbJson<&'q JsonMap>>>
        + for<'q> Param<'q, Option<bool>>
        + for<'q> Param<'q, Option<i64>>
        + Get<String>
        + Get<Option<String>>
        + Get<Vec<u8>>
        + Get<i64>
        + Get<i32>
        + Get<bool>
        + Get<DbTime>
        + Get<Option<DbTime>>
        + Get<DbJson<JsonMap>>
        + Get<JsonText>
        + Get<Option<JsonText>>
        + Get<Option<String>>
        + Get<Option<i64>>
        + Get<Option<bool>>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    fn fetch_all<'c, 'q: 'c>(
        conn: &'c mut DB::Connection,
        query: SqlQuery<'q, DB>,
    ) -> BoxFuture<'c, sqlx::Result<Vec<DB::Row>>> {
        Box::pin(query.fetch_all(conn))
    }

    fn fetch_optional<'c, 'q: 'c>(
        conn: &'c mut DB::Connection,
        query: SqlQuery<'q, DB>,
    ) -> BoxFuture<'c, sqlx::Result<Option<DB::Row>>> {
        Box::pin(query.fetch_optional(conn))
    }

    fn execute<'c, 'q: 'c>(
        conn: &'c mut DB::Connection,
        query: SqlQuery<'q, DB>,
    ) -> BoxFuture<'c, sqlx::Result<DB::QueryResult>> {
        Box::pin(query.execute(conn))
    }

    fn fetch<'c, 'q: 'c>(
        conn: &'c mut DB::Connection,
        query: SqlQuery<'q, DB>,
    ) -> BoxStream<'c, sqlx::Result<DB::Row>> {
        query.fetch(conn)
    }
}

/// A statement and its parameters, bound in `$n` order. Run on a connection (of a
/// transaction) it classifies errors itself; on a `ConnSource`, the source does.
pub(crate) struct Stmt<'q, DB: Database>(SqlQuery<'q, DB>);

impl<'q, DB: SqlDb> Stmt<'q, DB> {
    pub fn new(sql: &'q str) -> Self {
        Self(sqlx::query(sql))
    }

    pub fn bind<T>(self, value: T) -> Self
    where
        DB: Param<'q, T>,
    {
        Self(<DB as Param<'q, T>>::push(self.0, value))
    }

    /// Applies `bind` to the statement's query (for binds of `filter::bind_arg`).
    pub fn map(self, bind: impl FnOnce(SqlQuery<'q, DB>) -> SqlQuery<'q, DB>) -> Self {
        Self(bind(self.0))
    }

    /// Binds the service's clock for the `now` of a `SqlText`, where the dialect
    /// has no clock of its own (`Dialect::NOW`).
    pub fn bind_now(self) -> Self {
        match DB::NOW {
            Some(_) => self,
            None => self.bind(DbTime(crate::domain::now())),
        }
    }

    pub async fn fetch_all(self, conn: &mut DB::Connection) -> StoreResult<Vec<DB::Row>> {
        <DB as SqlDb>::fetch_all(conn, self.0)
            .await
            .map_err(DB::classify)
    }

    pub async fn fetch_optional(self, conn: &mut DB::Connection) -> StoreResult<Option<DB::Row>> {
        <DB as SqlDb>::fetch_optional(conn, self.0)
            .await
            .map_err(DB::classify)
    }

    /// Runs the statement; returns how many rows it changed.
    pub async fn execute(self, conn: &mut DB::Connection) -> StoreResult<u64> {
        let done = <DB as SqlDb>::execute(conn, self.0)
            .await
            .map_err(DB::classify)?;
        Ok(DB::rows_affected(&done))
    }
}

/// Where a backend's single statements get a connection, and how they give it
/// back: the backend knows whether a failed statement left the connection fit for
/// the next one.
#[async_trait]
pub(crate) trait ConnSource: Send + Sync {
    type Db: SqlDb;
    type Conn: DerefMut<Target = <Self::Db as Database>::Connection> + Send;

    async fn acquire(&self) -> StoreResult<Self::Conn>;

    /// Gives `conn` back after a statement that ended with `result`, classified.
    /// Async: a backend may have to end the connection's transaction first.
    async fn release<T: Send>(conn: Self::Conn, result: sqlx::Result<T>) -> StoreResult<T>;

    async fn fetch_all(&self, stmt: Stmt<'_, Self::Db>) -> StoreResult<Vec<DbRow<Self>>> {
        let mut conn = self.acquire().await?;
        let rows = <Self::Db as SqlDb>::fetch_all(&mut *conn, stmt.0).await;
        Self::release(conn, rows).await
    }

    async fn fetch_optional(&self, stmt: Stmt<'_, Self::Db>) -> StoreResult<Option<DbRow<Self>>> {
        let mut conn = self.acquire().await?;
        let row = <Self::Db as SqlDb>::fetch_optional(&mut *conn, stmt.0).await;
        Self::release(conn, row).await
    }

    /// Runs the statement; returns how many rows it changed.
    async fn execute(&self, stmt: Stmt<'_, Self::Db>) -> StoreResult<u64> {
        let mut conn = self.acquire().await?;
        let done = <Self::Db as SqlDb>::execute(&mut *conn, stmt.0).await;
        let done = Self::release(conn, done).await?;
        Ok(<Self::Db as Dialect>::rows_affected(&done))
    }
}

/// The rows of `stmt` as `read` maps them, until they pass `max_bytes` as `size`
/// counts them (at least one; see `store::collect_within`). A query cut short leaves
/// rows unread: its connection is dropped, not given back clean, so the backend drains
/// (or cancels) them before reuse.
pub(crate) async fn fetch_within<C: ConnSource, T: Send>(
    source: &C,
    stmt: Stmt<'_, C::Db>,
    max_bytes: usize,
    read: fn(&DbRow<C>) -> StoreResult<T>,
    size: fn(&T) -> usize,
) -> StoreResult<ListRows<T>> {
    let mut conn = source.acquire().await?;
    let collected = {
        let rows = <C::Db as SqlDb>::fetch(&mut *conn, stmt.0);
        collect_within(rows, max_bytes, read, size, <C::Db as Dialect>::classify).await
    };
    match collected {
        Ok(rows) if !rows.cut_short => C::release(conn, Ok(rows)).await,
        other => other,
    }
}

type DbRow<S> = <<S as ConnSource>::Db as Database>::Row;

/// SQL text built from clauses, each `?` in them numbered as the next `$n`, so a
/// statement holds only the filters a call uses and binds its parameters in the
/// order the clauses were pushed.
#[derive(Debug, Default)]
pub(crate) struct SqlText {
    text: String,
    params: usize,
}

impl SqlText {
    pub fn new(clause: &str) -> Self {
        Self::default().push(clause)
    }

    pub fn push(mut self, clause: &str) -> Self {
        let mut parts = clause.split('?');
        self.text.push_str(parts.next().unwrap_or_default());
        for part in parts {
            self.params += 1;
            self.text.push('$');
            self.text.push_str(&self.params.to_string());
            self.text.push_str(part);
        }
        self
    }

    /// The current time: the database's clock where the dialect has one, else a
    /// parameter that `Stmt::bind_now` binds.
    pub fn now<DB: Dialect>(self) -> Self {
        match DB::NOW {
            Some(now) => self.push(now),
            None => self.push("?"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::SqlText;

    #[test]
    fn sql_text_numbers_each_question_mark_in_order() {
        let sql = SqlText::new("SELECT 1 WHERE a = ? AND b = ?")
            .push(" AND (c, d) > (?, ?)")
            .push(" LIMIT ?");
        assert_eq!(
            sql.as_str(),
            "SELECT 1 WHERE a = $1 AND b = $2 AND (c, d) > ($3, $4) LIMIT $5"
        );
    }
}
