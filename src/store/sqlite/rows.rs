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
use crate::domain::{ContactRow, ContactView};
use crate::store::common::{Arg, Clause, ContactPage};
use crate::store::{
    Budget, EncodedCollector, EncodedRows, ListRows, StoreError, StoreResult, contact_bytes,
    row_bytes,
};

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
    /// SELECT of `CONTACT_COLUMNS` up to its `LIMIT ?`, bound to the page's limit),
    /// each encoded by the page's encoder, no more than the page's `max_bytes` of
    /// them (at least one). The blocking thread steps the statement and copies the
    /// rows out a chunk at a time; this task encodes each chunk while the next is
    /// read, so the two halves of a row's cost run on two threads. `place` is the
    /// reader this read holds until the rows are in, whether or not its caller
    /// still waits for them; a caller that goes away stops the read at its next
    /// chunk.
    pub async fn fetch_contacts(
        &self,
        place: Conn,
        plan: ListPlan,
        page: &ContactPage<'_>,
    ) -> StoreResult<EncodedRows> {
        let (limit, max_bytes) = (page.limit, page.max_bytes);
        let (chunks, mut arriving) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let read = self.spawn(place, move |conn| {
            let clause = plan.choose(conn).map_err(classify)?;
            read(conn, &clause, limit, max_bytes, &chunks)
        });
        // The read thread keeps to the budget; the collector only encodes.
        let mut collector = EncodedCollector::new(page.encoder, page.query.order, usize::MAX);
        while let Some(chunk) = arriving.recv().await {
            chunk.encode(&mut collector)?;
        }
        let cut_short = read.await.map_err(StoreError::internal)??;
        let mut rows = collector.finish();
        rows.cut_short = cut_short;
        Ok(rows)
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
            let read = || {
                let mut statement = conn.prepare_cached(&sql)?;
                bind_numbered(&mut statement, &params)?;
                let size = |found: &Option<ContactView>| found.as_ref().map_or(0, contact_bytes);
                collect(statement.raw_query(), max_bytes, checked_view_of, size)
            };
            read().map_err(classify)
        })
        .await
    }

    /// `read` on a page connection, on a blocking thread, holding `place` until done.
    async fn blocking<T: Send + 'static>(
        &self,
        place: Conn,
        read: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.spawn(place, read)
            .await
            .map_err(StoreError::internal)?
    }

    /// `blocking`, started now rather than when first polled.
    fn spawn<T: Send + 'static>(
        &self,
        place: Conn,
        read: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> tokio::task::JoinHandle<StoreResult<T>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let read = inner.with_conn(read);
            place.done();
            read
        })
    }
}

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// `read` on an idle connection, or a new one.
    fn with_conn<T>(&self, read: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let idle = self.lock_idle().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open().map_err(classify)?,
        };
        let read = read(&conn);
        // A statement's error leaves its connection as it was (the statement reset);
        // only an unusable file would fail the next one too.
        self.lock_idle().push(conn);
        read
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }
}

/// Chunks of rows in the channel between the read thread and the encoding task:
/// enough that neither waits on the other's every hand-over.
const CHUNKS_AHEAD: usize = 4;
/// A chunk goes to the encoding task at this many rows, or sooner at this many bytes.
const CHUNK_ROWS: usize = 128;
const CHUNK_BYTES: usize = 256 << 10;

/// Steps `clause`'s statement, sending its rows copied out in chunks, until they
/// pass `max_bytes` as `row_bytes` counts them (at least one row). Returns whether
/// it stopped there with more rows to come (`cut_short`). A closed channel (the
/// caller gone, or its encoding failed) ends it early.
fn read(
    conn: &Connection,
    clause: &Clause,
    limit: u32,
    max_bytes: usize,
    chunks: &tokio::sync::mpsc::Sender<RawChunk>,
) -> StoreResult<bool> {
    let mut statement = bound(conn, clause, limit).map_err(classify)?;
    let mut rows = statement.raw_query();
    let (mut chunk, mut budget) = (RawChunk::default(), Budget::new(max_bytes));
    while let Some(row) = rows.next().map_err(classify)? {
        if budget.spent() {
            send(chunks, chunk);
            return Ok(true);
        }
        let contact = ref_of(row).map_err(classify)?;
        budget.take(row_bytes(&contact));
        chunk.push(&contact);
        let full = chunk.rows.len() >= CHUNK_ROWS || chunk.text.len() >= CHUNK_BYTES;
        if full && !send(chunks, chunk.take()) {
            return Ok(false);
        }
    }
    send(chunks, chunk);
    Ok(false)
}

/// Sends `chunk` unless it is empty; false once the receiver is gone.
fn send(chunks: &tokio::sync::mpsc::Sender<RawChunk>, chunk: RawChunk) -> bool {
    chunk.rows.is_empty() || chunks.blocking_send(chunk).is_ok()
}

/// Rows copied out of SQLite's buffers: their text in one string, and the rest.
#[derive(Default)]
struct RawChunk {
    text: String,
    rows: Vec<RawRow>,
}

/// A row of a `RawChunk`: its id, email and properties are `text[start..id]`,
/// `text[id..email]` and `text[email..end]`.
struct RawRow {
    start: usize,
    id: usize,
    email: usize,
    end: usize,
    suppressed: bool,
    unsubscribed: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    revision: i64,
}

impl RawChunk {
    /// Its rows, leaving it empty with room for as many.
    fn take(&mut self) -> Self {
        let next = Self {
            text: String::with_capacity(self.text.len()),
            rows: Vec::with_capacity(self.rows.len()),
        };
        std::mem::replace(self, next)
    }

    /// Copies `contact` in.
    fn push(&mut self, contact: &ContactRow<'_>) {
        let start = self.text.len();
        self.text.push_str(contact.id);
        let id = self.text.len();
        self.text.push_str(contact.email);
        let email = self.text.len();
        self.text.push_str(contact.properties);
        let end = self.text.len();
        self.rows.push(RawRow {
            start,
            id,
            email,
            end,
            suppressed: contact.suppressed,
            unsubscribed: contact.unsubscribed,
            created_at: contact.created_at,
            updated_at: contact.updated_at,
            revision: contact.revision,
        });
    }

    fn encode(&self, collector: &mut EncodedCollector<'_>) -> StoreResult<()> {
        for row in &self.rows {
            collector.push(&ContactRow {
                id: &self.text[row.start..row.id],
                email: &self.text[row.id..row.email],
                properties: &self.text[row.email..row.end],
                suppressed: row.suppressed,
                unsubscribed: row.unsubscribed,
                created_at: row.created_at,
                updated_at: row.updated_at,
                revision: row.revision,
            })?;
        }
        Ok(())
    }
}

/// `clause`'s statement with its arguments bound, and `limit` for its `LIMIT ?`.
fn bound<'c>(
    conn: &'c Connection,
    clause: &Clause,
    limit: u32,
) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
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
    Ok(statement)
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
    let mut budget = Budget::new(max_bytes);
    while let Some(row) = rows.next()? {
        if budget.spent() {
            collected.cut_short = true;
            break;
        }
        let item = read(row)?;
        budget.take(size(&item));
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
    ref_of(row).map(|contact| contact.to_view())
}

/// `view_of`, borrowed from SQLite's buffers.
fn ref_of<'r>(row: &'r rusqlite::Row<'_>) -> rusqlite::Result<ContactRow<'r>> {
    Ok(ContactRow {
        id: text(row, 0)?,
        email: text(row, 1)?,
        properties: text(row, 2)?,
        suppressed: row.get(3)?,
        unsubscribed: row.get(4)?,
        created_at: time(row, 5)?,
        updated_at: time(row, 6)?,
        revision: row.get(7)?,
    })
}

/// A TEXT column, as SQLite holds it.
fn text<'r>(row: &'r rusqlite::Row<'_>, at: usize) -> rusqlite::Result<&'r str> {
    match row.get_ref(at)? {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).map_err(rusqlite::Error::Utf8Error),
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
mod tests;
