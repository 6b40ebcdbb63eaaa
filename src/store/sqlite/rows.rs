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
/// pass `max_bytes` as `row_bytes` counts them (at least one row). Returns whether it stopped there with more
/// rows to come (`cut_short`). A closed channel (the caller gone, or its encoding
/// failed) ends it early.
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
mod tests {
    use super::*;
    use crate::domain::{ContactKey, ContactOrder};
    use crate::store::ContactEncoder;

    /// Writes every column of a contact as text, a line each.
    #[derive(Debug)]
    struct Columns;

    impl ContactEncoder for Columns {
        fn encode(&self, c: &ContactRow<'_>, out: &mut Vec<u8>) -> Result<(), String> {
            let line = format!(
                "{} {} {} {} {} {} {} {}",
                c.id,
                c.email,
                c.properties,
                c.suppressed,
                c.unsubscribed,
                c.created_at.timestamp_micros(),
                c.updated_at.timestamp_micros(),
                c.revision
            );
            out.extend_from_slice(line.as_bytes());
            Ok(())
        }
    }

    /// `fetch_contacts` without the runtime: the rows `read` sends, encoded.
    fn read_all(reads: &Inner, clause: &Clause, limit: u32, max_bytes: usize) -> EncodedRows {
        let (chunks, mut arriving) = tokio::sync::mpsc::channel(1 << 12);
        let cut_short = reads
            .with_conn(|conn| read(conn, clause, limit, max_bytes, &chunks))
            .expect("read");
        let mut collector = EncodedCollector::new(&Columns, ContactOrder::Id, usize::MAX);
        while let Ok(chunk) = arriving.try_recv() {
            chunk.encode(&mut collector).expect("encodes");
        }
        let mut rows = collector.finish();
        rows.cut_short = cut_short;
        rows
    }

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

    /// Page reads of a new file of a `contacts` table of the columns a list reads
    /// (and a `score`), with the rows `insert` adds.
    fn reads_of(insert: &str) -> (tempfile::TempDir, Inner) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rows.db");
        let setup = Connection::open(&path).expect("create");
        setup
            .execute_batch(&format!(
                "CREATE TABLE contacts (id TEXT, email TEXT, properties TEXT, \
                 suppressed INTEGER, unsubscribed INTEGER, created_at INTEGER, \
                 updated_at INTEGER, revision INTEGER, score REAL); {insert}"
            ))
            .expect("seed");
        let reads = Inner {
            path,
            idle: Mutex::new(Vec::new()),
        };
        (dir, reads)
    }

    /// The whole table in id order.
    fn all_rows() -> Clause {
        Clause {
            sql: "SELECT id, email, properties, suppressed, unsubscribed, created_at, \
                  updated_at, revision FROM contacts ORDER BY id LIMIT ?"
                .into(),
            args: Vec::new(),
        }
    }

    /// Every kind of argument binds as sqlx binds it, and a page stops at its byte
    /// budget with the row after it unread.
    #[test]
    fn arguments_bind_as_sqlx_binds_them_and_pages_stop_at_their_budget() {
        let (_dir, reads) = reads_of(
            "INSERT INTO contacts VALUES \
             ('c1', 'a@x', '{\"n\":1}', 1, 0, 1000000, 2000000, 3, 1.5), \
             ('c2', 'b@x', '{}', 0, 1, 1000000, 2000000, 1, 2.5), \
             ('c3', 'c@x', '{}', 1, 0, 5000000, 5000000, 1, 1.5);",
        );
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
        let rows = read_all(&reads, &clause, 10, 1 << 20);
        assert!(!rows.cut_short);
        let got: Vec<(&[u8], &ContactKey)> =
            rows.items.iter().map(|c| (&c.bytes[..], &c.key)).collect();
        let c1 = ContactKey::Id("c1".into());
        assert_eq!(
            got,
            [(&b"c1 a@x {\"n\":1} true false 1000000 2000000 3"[..], &c1)]
        );

        let all = all_rows();
        // Past the budget after the first row: one row, and more follow.
        let rows = read_all(&reads, &all, 10, 1);
        assert_eq!((rows.items.len(), rows.cut_short), (1, true));
        let rows = read_all(&reads, &all, 2, 1 << 20);
        assert_eq!((rows.items.len(), rows.cut_short), (2, false));
        assert_eq!(reads.lock_idle().len(), 1, "one connection, reused");
    }

    /// A query of many rows arrives in chunks, every row once and in order; a
    /// receiver that is gone stops the read at its first chunk.
    #[test]
    fn rows_arrive_in_chunks_in_order_and_a_closed_channel_stops_the_read() {
        let (_dir, reads) = reads_of(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) \
             INSERT INTO contacts SELECT printf('c%04d', i), printf('u%d@x', i), \
             '{\"i\":' || i || '}', 0, 0, i, i, 1, 0 FROM n;",
        );
        let all = all_rows();
        let (chunks, mut arriving) = tokio::sync::mpsc::channel(1 << 12);
        let cut_short = reads
            .with_conn(|conn| read(conn, &all, 1000, 1 << 20, &chunks))
            .expect("read");
        assert!(!cut_short);
        let mut sizes = Vec::new();
        let mut collector = EncodedCollector::new(&Columns, ContactOrder::Id, usize::MAX);
        while let Ok(chunk) = arriving.try_recv() {
            sizes.push(chunk.rows.len());
            chunk.encode(&mut collector).expect("encodes");
        }
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
        assert!(sizes.iter().all(|n| *n <= CHUNK_ROWS), "{sizes:?}");
        let rows = collector.finish();
        let want: Vec<ContactKey> = (1..=1000)
            .map(|i| ContactKey::Id(format!("c{i:04}")))
            .collect();
        let got: Vec<ContactKey> = rows.items.iter().map(|r| r.key.clone()).collect();
        assert_eq!(got, want);
        assert_eq!(
            &rows.items[6].bytes[..],
            b"c0007 u7@x {\"i\":7} false false 7 7 1"
        );

        let (chunks, arriving) = tokio::sync::mpsc::channel(1);
        drop(arriving);
        let cut_short = reads
            .with_conn(|conn| read(conn, &all, 1000, 1 << 20, &chunks))
            .expect("a read whose caller went away ends without an error");
        assert!(!cut_short);
    }
}
