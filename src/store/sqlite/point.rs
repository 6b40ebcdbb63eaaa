//! Point reads stepped in place, on the caller's own thread.
//!
//! A point read is one probe of a unique index and of the row it finds: a few pages,
//! tens of microseconds in SQLite. Handing it to sqlx's worker thread and back costs
//! two thread wake-ups, more than the read (BENCHMARKS.md, "SQLite point reads in
//! place"). So GetContact, GetContactByEmail and an update's read are stepped here by
//! rusqlite on read-only connections of their own, without leaving the task.
//!
//! The runtime's thread must never sleep in SQLite: these connections have no busy
//! timeout, so a read that would wait (SQLITE_BUSY, which a WAL reader meets only
//! while another connection recovers the WAL) is handed back to the caller (`None`)
//! and runs on the store's readers, which may wait. So is a read when
//! all of these connections are in use (at most one per thread stepping one, and
//! never more than the store's readers) or one cannot be opened.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, ToSql};

use super::rows::{bind_numbered, checked_view_of, classify};
use crate::domain::ContactView;
use crate::store::StoreResult;

/// What a read stepped in place found.
#[derive(Debug)]
pub(super) enum Found {
    /// The statement returned no row.
    NoRow,
    /// A row whose contact columns are NULL (a checked read's live key, no contact).
    Nulls,
    Contact(ContactView),
}

/// The connections that step point reads in place.
pub(super) struct PointReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Connections open, idle or stepping.
    open: AtomicU32,
    max: u32,
}

impl PointReads {
    /// Point reads of the database file at `path`, on at most `max` connections.
    pub fn new(path: PathBuf, max: u32) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            open: AtomicU32::new(0),
            max: max.max(1),
        }
    }

    /// The one row of `sql` (a SELECT of `CONTACT_COLUMNS`, first), or `None` when
    /// it must run elsewhere: no connection free, or the database busy.
    pub fn contact(&self, sql: &str, params: &[&dyn ToSql]) -> Option<StoreResult<Found>> {
        let conn = self.take()?;
        let read = conn
            .prepare_cached(sql)
            .and_then(|mut statement| {
                bind_numbered(&mut statement, params)?;
                statement
                    .raw_query()
                    .next()?
                    .map(|row| Ok(checked_view_of(row)?.map_or(Found::Nulls, Found::Contact)))
                    .transpose()
            })
            .map(|row| row.unwrap_or(Found::NoRow));
        // A statement's error leaves its connection as it was (the statement reset).
        self.lock_idle().push(conn);
        match read {
            Err(err) if is_busy(&err) => None,
            read => Some(read.map_err(classify)),
        }
    }

    /// An idle connection, else a new one while fewer than `max` are open.
    fn take(&self) -> Option<Connection> {
        if let Some(conn) = self.lock_idle().pop() {
            return Some(conn);
        }
        let open = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        if open.is_err() {
            return None;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // No busy handler (rusqlite sets 5 s on open): a read that would wait is
        // handed back instead.
        let opened = Connection::open_with_flags(&self.path, flags)
            .and_then(|conn| conn.busy_timeout(Duration::ZERO).map(|()| conn));
        match opened {
            Ok(conn) => Some(conn),
            Err(_) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Connections open now.
    #[cfg(test)]
    fn open_now(&self) -> u32 {
        self.open.load(Ordering::Acquire)
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    matches!(err.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(dir: &std::path::Path) -> (PathBuf, Connection) {
        let path = dir.join("point.db");
        let setup = Connection::open(&path).expect("create");
        setup
            .execute_batch(
                "PRAGMA journal_mode = WAL; \
                 CREATE TABLE contacts (id TEXT PRIMARY KEY, email TEXT, properties TEXT, \
                 suppressed INTEGER, unsubscribed INTEGER, created_at INTEGER, \
                 updated_at INTEGER, revision INTEGER); \
                 INSERT INTO contacts VALUES ('c1', 'a@x', '{\"n\":1}', 0, 1, 1000000, 2000000, 4);",
            )
            .expect("seed");
        (path, setup)
    }

    const BY_ID: &str = "SELECT c.id, c.email, c.properties, c.suppressed, c.unsubscribed, \
        c.created_at, c.updated_at, c.revision FROM (SELECT 1) k \
        LEFT JOIN contacts c ON c.id = $1 WHERE $2 = 'live'";

    /// The three answers, a connection reused, and at most `max` connections: a read
    /// that finds none free is handed back, not waited for.
    #[test]
    fn reads_in_place_on_bounded_connections() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (path, _setup) = seeded(dir.path());
        let reads = PointReads::new(path, 1);
        let found = reads.contact(BY_ID, &[&"c1", &"live"]).expect("in place");
        let Ok(Found::Contact(c1)) = found else {
            panic!("{found:?}");
        };
        assert_eq!((c1.email.as_str(), c1.revision), ("a@x", 4));
        assert_eq!(c1.properties.as_str(), "{\"n\":1}");
        assert!(!c1.suppressed && c1.unsubscribed);
        let found = reads.contact(BY_ID, &[&"c2", &"live"]).expect("in place");
        assert!(matches!(found, Ok(Found::Nulls)), "{found:?}");
        let found = reads
            .contact(BY_ID, &[&"c1", &"revoked"])
            .expect("in place");
        assert!(matches!(found, Ok(Found::NoRow)), "{found:?}");
        assert_eq!(reads.open_now(), 1, "one connection, reused");

        let held = reads.take().expect("the one connection");
        assert!(reads.contact(BY_ID, &[&"c1", &"live"]).is_none());
        reads.lock_idle().push(held);
        assert!(reads.contact(BY_ID, &[&"c1", &"live"]).is_some());
    }

    /// A read that would wait for a lock is handed back at once, never slept on.
    #[test]
    fn a_read_that_would_wait_is_handed_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (path, setup) = seeded(dir.path());
        // Out of WAL mode, a writer's exclusive lock keeps every reader out.
        setup
            .execute_batch("PRAGMA journal_mode = DELETE; BEGIN EXCLUSIVE; DELETE FROM contacts;")
            .expect("lock");
        let reads = PointReads::new(path, 2);
        let started = std::time::Instant::now();
        assert!(reads.contact(BY_ID, &[&"c1", &"live"]).is_none());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        setup.execute_batch("ROLLBACK").expect("unlock");
        let found = reads.contact(BY_ID, &[&"c1", &"live"]).expect("in place");
        assert!(matches!(found, Ok(Found::Contact(_))), "{found:?}");
    }
}
