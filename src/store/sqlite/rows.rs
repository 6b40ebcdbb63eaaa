//! A list page's rows, read by the calling side rather than through sqlx's worker.
//!
//! sqlx runs each SQLite statement on the connection's own thread and sends every row
//! over a channel: a thread wake-up per row, in one direction or the other, a copy of
//! each column (`sqlite3_value_dup`), and then a lookup by name and another copy to
//! make a contact of it. A list reads up to a page of rows per statement, so here a
//! page's statement is stepped on a blocking thread of the runtime by rusqlite (the
//! thin driver over the same libsqlite3-sys, already the benchmark's), which reads
//! each column by position straight into the contact: one hand-over per page. A
//! search's count of index matches, which picks its statement, runs there too.
//!
//! Its connections are read-only ones of its own to the store's file, opened when
//! first needed and kept in a list. A page read holds a reader of the store's
//! connection list (`conns.rs`) until its rows are in, so no more page reads run,
//! and no more of these connections exist, than `--db-max-connections` readers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags};

use super::conns::Conn;
use super::search::ListPlan;
use crate::domain::{ContactId, ContactView, Email, PropertiesJson};
use crate::store::common::{Arg, Clause};
use crate::store::{ContactRows, ListRows, StoreError, StoreResult, contact_bytes};

/// As the store's own connections wait for a writer's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The connections that read list pages.
#[derive(Clone)]
pub(super) struct PageReads {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl PageReads {
    /// Page reads of the database file at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            inner: Arc::new(Inner {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The contacts of the statement `plan` chooses on the page's connection (a
    /// SELECT of `CONTACT_COLUMNS` up to its `LIMIT ?`, bound to `limit`), no more
    /// than `max_bytes` of them (at least one) as `collect_within` counts them.
    /// `place` is the reader this read holds until the rows are in, whether or not
    /// its caller still waits for them.
    pub async fn fetch_contacts(
        &self,
        place: Conn,
        plan: ListPlan,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<ContactRows> {
        self.blocking(place, move |conn| {
            let clause = plan.choose(conn)?;
            read(conn, &clause, limit, max_bytes)
        })
        .await
    }

    /// The rows of `sql`, a checked statement of contact columns (a row of NULLs,
    /// `None`, for a live key that matched nothing), bound to `params` as `$1`,
    /// `$2`..., as `fetch_contacts` reads a page.
    pub async fn fetch_checked(
        &self,
        place: Conn,
        sql: String,
        params: Vec<Value>,
        max_bytes: usize,
    ) -> StoreResult<ListRows<Option<ContactView>>> {
        self.blocking(place, move |conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            bind_numbered(&mut statement, &params)?;
            let size = |found: &Option<ContactView>| found.as_ref().map_or(0, contact_bytes);
            collect(statement.raw_query(), max_bytes, checked_view_of, size)
        })
        .await
    }

    /// `read` on a page connection, on a blocking thread, holding `place` until done.
    async fn blocking<T: Send + 'static>(
        &self,
        place: Conn,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        let read = tokio::task::spawn_blocking(move || {
            let read = inner.with_conn(read);
            place.done();
            read
        });
        read.await.map_err(StoreError::internal)?
    }
}

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// `read` on an idle connection, or a new one.
    fn with_conn<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let idle = self.lock_idle().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open().map_err(classify)?,
        };
        let read = read(&conn);
        // A statement's error leaves its connection as it was (the statement reset);
        // only an unusable file would fail the next one too.
        self.lock_idle().push(conn);
        read.map_err(classify)
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }
}

fn read(
    conn: &Connection,
    clause: &Clause,
    limit: u32,
    max_bytes: usize,
) -> rusqlite::Result<ContactRows> {
    let mut statement = conn.prepare_cached(&clause.sql)?;
    for (i, arg) in clause.args.iter().enumerate() {
        let at = i + 1;
        match arg {
            Arg::Text(text) | Arg::Json(text) => statement.raw_bind_parameter(at, text.as_str()),
            Arg::Float(n) => statement.raw_bind_parameter(at, *n),
            // As sqlx binds them (`common/types.rs`): booleans as integers, times as
            // microseconds since the epoch.
            Arg::Bool(b) => statement.raw_bind_parameter(at, i64::from(*b)),
            Arg::Time(t) => statement.raw_bind_parameter(at, t.timestamp_micros()),
        }?;
    }
    statement.raw_bind_parameter(clause.args.len() + 1, i64::from(limit))?;
    collect(statement.raw_query(), max_bytes, view_of, contact_bytes)
}

/// Rows read by `read` until they hold more than `max_bytes` (at least one row), as
/// `store::collect_within` collects sqlx's.
fn collect<T>(
    mut rows: rusqlite::Rows<'_>,
    max_bytes: usize,
    read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    size: fn(&T) -> usize,
) -> rusqlite::Result<ListRows<T>> {
    let mut collected = ListRows::default();
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        if bytes > max_bytes && !collected.items.is_empty() {
            collected.cut_short = true;
            break;
        }
        let item = read(row)?;
        bytes += size(&item);
        collected.items.push(item);
    }
    Ok(collected)
}

/// Binds `params[n - 1]` to `$n`. SQLite numbers `$n` parameters in the order they
/// first appear in the text, not by their digits, and a statement may name `$3`
/// before `$2` (`batch_get_sql`), so each is bound by its name.
pub(super) fn bind_numbered(
    statement: &mut rusqlite::Statement<'_>,
    params: &[impl rusqlite::ToSql],
) -> rusqlite::Result<()> {
    for (i, param) in params.iter().enumerate() {
        let name = format!("${}", i + 1);
        let at = statement
            .parameter_index(&name)?
            .ok_or(rusqlite::Error::InvalidParameterName(name))?;
        statement.raw_bind_parameter(at, param)?;
    }
    Ok(())
}

/// A contact from a checked statement's row, `None` for its row of NULLs (as
/// `common::checked_view` reads sqlx's rows).
pub(super) fn checked_view_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<ContactView>> {
    match row.get_ref(0)? {
        ValueRef::Null => Ok(None),
        _ => view_of(row).map(Some),
    }
}

/// A contact from a row of `CONTACT_COLUMNS`, by position.
fn view_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<ContactView> {
    Ok(ContactView {
        id: ContactId::from_trusted(text(row, 0)?),
        email: Email::from_trusted(text(row, 1)?),
        properties: PropertiesJson::from_trusted(text(row, 2)?),
        suppressed: row.get(3)?,
        unsubscribed: row.get(4)?,
        created_at: time(row, 5)?,
        updated_at: time(row, 6)?,
        revision: row.get(7)?,
    })
}

/// A TEXT column, copied once out of SQLite's buffer.
fn text(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<String> {
    match row.get_ref(at)? {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(rusqlite::Error::Utf8Error),
        other => Err(rusqlite::Error::InvalidColumnType(
            at,
            format!("column {at}"),
            other.data_type(),
        )),
    }
}

/// A time column: INTEGER microseconds since the Unix epoch (`common/types.rs`).
fn time(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<DateTime<Utc>> {
    let micros: i64 = row.get(at)?;
    DateTime::from_timestamp_micros(micros)
        .ok_or(rusqlite::Error::IntegralValueOutOfRange(at, micros))
}

/// As `super::classify` does sqlx's errors: a busy or locked database, or one that
/// cannot be opened, is UNAVAILABLE (retrying may help); anything else internal.
pub(super) fn classify(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseBusy, DatabaseLocked};
    match err.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | CannotOpen) => {
            StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(err)))
        }
        _ => StoreError::internal(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$n` is bound to the n-th parameter wherever it first appears in the text
    /// (SQLite's own index is the order of appearance: `$2` here is index 1).
    #[test]
    fn numbered_parameters_bind_by_their_number() {
        let conn = Connection::open_in_memory().expect("open");
        let mut statement = conn.prepare("SELECT $2 || $1 || $2").expect("prepare");
        bind_numbered(&mut statement, &["a", "b"]).expect("bind");
        let mut rows = statement.raw_query();
        let row = rows.next().expect("step").expect("a row");
        assert_eq!(row.get::<_, String>(0).expect("text"), "bab");
        drop(rows);
        let missing = bind_numbered(&mut statement, &["a", "b", "c"]);
        assert!(missing.is_err(), "a $3 the text does not have: {missing:?}");
    }

    /// Every kind of argument binds as sqlx binds it, and a page stops at its byte
    /// budget with the row after it unread.
    #[test]
    fn arguments_bind_as_sqlx_binds_them_and_pages_stop_at_their_budget() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rows.db");
        let setup = Connection::open(&path).expect("create");
        setup
            .execute_batch(
                "CREATE TABLE contacts (id TEXT, email TEXT, properties TEXT, \
                 suppressed INTEGER, unsubscribed INTEGER, created_at INTEGER, \
                 updated_at INTEGER, revision INTEGER, score REAL); \
                 INSERT INTO contacts VALUES \
                 ('c1', 'a@x', '{\"n\":1}', 1, 0, 1000000, 2000000, 3, 1.5), \
                 ('c2', 'b@x', '{}', 0, 1, 1000000, 2000000, 1, 2.5), \
                 ('c3', 'c@x', '{}', 1, 0, 5000000, 5000000, 1, 1.5);",
            )
            .expect("seed");
        let reads = Inner {
            path,
            idle: Mutex::new(Vec::new()),
        };
        let at = DateTime::from_timestamp_micros(1_000_000).expect("a time");
        let clause = Clause {
            sql: "SELECT id, email, properties, suppressed, unsubscribed, created_at, \
                  updated_at, revision FROM contacts WHERE suppressed = ? AND created_at = ? \
                  AND score = ? AND properties <> ? AND id > ? ORDER BY id LIMIT ?"
                .into(),
            args: vec![
                Arg::Bool(true),
                Arg::Time(at),
                Arg::Float(1.5),
                Arg::Json("[]".into()),
                Arg::Text("c0".into()),
            ],
        };
        let rows = reads
            .with_conn(|conn| read(conn, &clause, 10, 1 << 20))
            .expect("read");
        assert!(!rows.cut_short);
        let ids: Vec<&str> = rows.items.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c1"]);
        let c1 = &rows.items[0];
        assert_eq!(c1.properties.as_str(), "{\"n\":1}");
        assert!(c1.suppressed && !c1.unsubscribed);
        assert_eq!((c1.created_at, c1.revision), (at, 3));

        let all = Clause {
            sql: "SELECT id, email, properties, suppressed, unsubscribed, created_at, \
                  updated_at, revision FROM contacts ORDER BY id LIMIT ?"
                .into(),
            args: Vec::new(),
        };
        // Past the budget after the first row: one row, and more follow.
        let rows = reads
            .with_conn(|conn| read(conn, &all, 10, 1))
            .expect("read");
        assert_eq!((rows.items.len(), rows.cut_short), (1, true));
        let rows = reads
            .with_conn(|conn| read(conn, &all, 2, 1 << 20))
            .expect("read");
        assert_eq!((rows.items.len(), rows.cut_short), (2, false));
        assert_eq!(reads.lock_idle().len(), 1, "one connection, reused");
    }
}
