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
