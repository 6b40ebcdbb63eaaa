//! SQLite store: the zero-setup default, in one local file.
//!
//! Writes go through one connection (`conns.rs`), so this process never contends for
//! SQLite's single write lock with itself; reads use a separate pool and see
//! committed data (WAL). Write transactions begin with `BEGIN IMMEDIATE`, which
//! takes the write lock before the first read, so the reads that decide a change see
//! the latest rows and no row locks are needed.
//!
//! The SQL it shares with PostgreSQL is in `store::common`; here are its pools, its
//! dialect, and the calls it makes its own way (`contacts.rs`, `search.rs`).

mod conns;
mod contacts;
mod filter;
mod point;
mod rows;
mod search;
// Some statements are only the benchmark's baseline's and the tests' that pin them.
#[allow(dead_code)]
pub(crate) mod sql;
mod write_tx;
mod writes;

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteQueryResult, SqliteRow, SqliteSynchronous,
};
use sqlx::{Executor, Sqlite};

use super::common::{
    Arg, ChangeSql, Clause, ConnSource, Dialect, JsonColumn, JsonKind, SQLITE_CHANGES, SqlStore,
    SqlWriteTx, view_from_row,
};
use super::{Backend, ConnectOptions, StoreError, StoreResult, WriteTx, migrations};
use crate::domain::filter::{PropertyPath, Scalar};
use crate::domain::{ContactView, SearchTerm, TenantId, ValidationError};

pub use search::SEARCH_CANDIDATES;

pub struct SqliteStore {
    reader: conns::Conns,
    writer: conns::Conns,
    /// List pages, read past sqlx's worker threads (`rows.rs`).
    pages: rows::PageReads,
    /// Point reads, stepped in place (`point.rs`).
    points: point::PointReads,
    /// CreateContact and UpdateContact's compare-and-set, coalesced (`writes.rs`).
    creates: super::coalesce::Coalesced<writes::Creates>,
    updates: super::coalesce::Coalesced<writes::Updates>,
    bell: super::ChangeBell,
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|err| StoreError::Config(format!("invalid sqlite url: {err}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(30));
        if let Some(dir) = connect.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|err| {
                StoreError::Config(format!("cannot create `{}`: {err}", dir.display()))
            })?;
        }
        let writer = conns::Conns::connect(connect.clone(), 1, options.acquire_timeout).await?;
        if options.migrate {
            let migrator = migrations::migrator(migrations::SQLITE)
                .await
                .map_err(StoreError::internal)?;
            let mut conn = writer.get().await?;
            migrator
                .run(&mut *conn)
                .await
                .map_err(StoreError::internal)?;
            conn.done();
        }
        let readers = options.max_connections.clamp(1, 8);
        let pages = rows::PageReads::new(connect.get_filename().to_owned());
        let points = point::PointReads::new(connect.get_filename().to_owned(), readers);
        let reader =
            conns::Conns::connect(connect.read_only(true), readers, options.acquire_timeout)
                .await?;
        let bell = super::ChangeBell::local();
        let parts = writes::Writer {
            reader: reader.clone(),
            writer: writer.clone(),
            bell: bell.clone(),
        };
        // One writer: a second batch in flight would only wait for it, and a spare
        // slot has no connection of its own to take.
        let slots = usize::from(options.write_batches).min(1);
        let wait = options.acquire_timeout;
        let creates =
            super::coalesce::Coalesced::start(writes::Creates(parts.clone()), slots, 0, wait);
        let updates = super::coalesce::Coalesced::start(writes::Updates(parts), slots, 0, wait);
        Ok(Self {
            reader,
            writer,
            pages,
            points,
            creates,
            updates,
            bell,
        })
    }
}

#[async_trait]
impl Backend for SqliteStore {
    async fn purge_requests(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        batch: u32,
    ) -> StoreResult<u64> {
        super::common::purge_requests(self, before, batch).await
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.reader.get().await?;
        let pinged = (&mut *conn).execute("SELECT 1").await;
        conn.finish(pinged)?;
        Ok(())
    }

    fn counters(&self) -> super::StoreCounters {
        let (create_batches, creates) = self.creates.counters();
        let (update_batches, updates) = self.updates.counters();
        super::StoreCounters {
            write_batches: create_batches + update_batches,
            writes: creates + updates,
            ..Default::default()
        }
    }

    fn pool_usage(&self) -> super::PoolUsage {
        let mut usage = super::PoolUsage::default();
        for conns in [&self.reader, &self.writer] {
            let each = conns.usage();
            usage.max += each.max;
            usage.open += each.open;
            usage.idle += each.idle;
        }
        usage
    }

    async fn begin_write(&self, tenant: &TenantId) -> StoreResult<Box<dyn WriteTx + '_>> {
        let tx = SqlWriteTx::new(self.begin_tx().await?, tenant).ringing(&self.bell);
        Ok(Box::new(tx))
    }
}

#[async_trait]
impl SqlStore for SqliteStore {
    type Db = Sqlite;
    type Conns = conns::Conns;
    type Tx = write_tx::SqliteTx;

    fn reads(&self) -> &conns::Conns {
        &self.reader
    }

    fn writes(&self) -> &conns::Conns {
        &self.writer
    }

    async fn begin_tx(&self) -> StoreResult<write_tx::SqliteTx> {
        write_tx::SqliteTx::begin(&self.writer).await
    }

    fn bell(&self) -> &super::ChangeBell {
        &self.bell
    }
}

#[async_trait]
impl ConnSource for conns::Conns {
    type Db = Sqlite;
    type Conn = conns::Conn;

    async fn acquire(&self) -> StoreResult<conns::Conn> {
        self.get().await
    }

    async fn release<T: Send>(conn: conns::Conn, result: Result<T, sqlx::Error>) -> StoreResult<T> {
        conn.finish(result)
    }
}

impl Dialect for Sqlite {
    const CHANGES: &'static ChangeSql = &SQLITE_CHANGES;
    // The write transaction holds the database's write lock from `BEGIN IMMEDIATE`.
    const FOR_UPDATE: &'static str = "";
    const ROW_ID: &'static str = "rowid";
    const GREATEST: &'static str = "max";
    // SQLite's own clock reads milliseconds at best (`unixepoch('subsec')`); the
    // service's, in microseconds, is bound instead.
    const NOW: Option<&'static str> = None;

    fn any_of(column: &str) -> String {
        format!("{column} IN (SELECT value FROM json_each(?))")
    }

    /// Times are stored as microseconds and booleans as integers, which is what
    /// `json_extract` returns for them; a JSON object sent as a string comes back
    /// as that string, serde's text.
    fn json_rows(columns: &[JsonColumn]) -> String {
        let select: Vec<String> = columns
            .iter()
            .map(|&JsonColumn(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
            .collect();
        format!("(SELECT {} FROM json_each(?)) AS r", select.join(", "))
    }

    fn classify(err: sqlx::Error) -> StoreError {
        classify(err)
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn contact_view(row: &SqliteRow) -> StoreResult<ContactView> {
        view_from_row::<Sqlite>(row)
    }

    // BINARY, SQLite's default collation, is byte order.
    const BYTE_ORDER: &'static str = "";
    const FIND: &'static str = "instr";
    const EXPLAIN: Option<&'static str> = None;

    fn search_condition(out: &mut Clause, term: &SearchTerm) {
        filter::search_condition(out, term);
    }

    fn json_exists(out: &mut Clause, path: &PropertyPath, present: bool) {
        filter::json_exists(out, path, present);
    }

    fn json_equals(out: &mut Clause, path: &PropertyPath, value: &Scalar) {
        filter::json_equals(out, path, value);
    }

    fn json_typed(out: &mut Clause, path: &PropertyPath, kind: JsonKind) {
        filter::json_typed(out, path, kind);
    }

    fn json_compare(out: &mut Clause, path: &PropertyPath, kind: JsonKind, op: &str, arg: Arg) {
        filter::json_compare(out, path, kind, op, arg);
    }
}

/// Sorts driver errors into the kinds the API maps to status codes.
fn classify(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        // Extended result codes: 2067 UNIQUE, 1555 PRIMARY KEY; 5/6 and their
        // extended forms are BUSY/LOCKED; 18 TOOBIG.
        let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(-1);
        match code {
            // SQLite names the columns of the unique key a write broke ("UNIQUE
            // constraint failed: contacts.tenant_id, contacts.email_key"): there,
            // an update took another contact's address (a create skips a taken one,
            // ON CONFLICT). Any other unique key that collides is a record's id.
            2067 if db.message().contains("contacts.email_key") => {
                return StoreError::Conflict { field: "email" };
            }
            2067 | 1555 => return StoreError::Conflict { field: "id" },
            // FOREIGN KEY: the referenced contact is gone.
            787 => return StoreError::NotFound("contact"),
            18 => {
                return StoreError::Invalid(ValidationError::new(
                    "request",
                    "contains a value the database cannot store",
                ));
            }
            c if c & 0xff == 5 || c & 0xff == 6 || c & 0xff == 10 || c & 0xff == 13 => {
                return StoreError::Unavailable(err);
            }
            _ => {}
        }
    }
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err),
        other => StoreError::Internal(Box::new(other)),
    }
}
