//! A search stream's later queries, served from one statement held open (issue 20).
//!
//! A page query of a search (`ORDER BY ... LIMIT`) is cheapest as a walk of the
//! tenant in the list's order that tests each row, so a stream of a term that one
//! contact in eight matches reads every contact of the tenant, page after page. The
//! same statement without its `LIMIT`, planned for all of its rows
//! (`cursor_tuple_fraction = 1`), may instead take the trigram index and sort what
//! it finds, as `COPY` of the same rows reads them (the planner chooses). So a full stream (no `max_pages`) of a
//! search fetches its queries after the first from a cursor of that statement; the
//! first stays a page query, so a first page comes as fast as before.
//!
//! What a cursor holds, and for how long: a connection, and a transaction's
//! snapshot, from the stream's second query to its last. At most a quarter of the
//! pool is held so (`Portals`); a stream that finds none free reads page queries.
//! A cursor the stream has not fetched from for `IDLE` (a slow or paused client) is
//! closed, and the rest of that stream is read by page queries, which hold nothing
//! between them: a slow reader holds rows, never a connection, as before. A fetch
//! cut short by the byte budget, or one that failed, closes the cursor too, and the
//! query and the rest of the stream are then served by page queries. The sort
//! itself is bounded by PostgreSQL (`work_mem`, then temporary files).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Executor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::contacts::list_statement;
use super::rows::ref_from_row;
use super::write_tx::PgTx;
use super::{PgStore, classify};
use crate::domain::ContactKey;
use crate::store::common::{BackendContacts, ContactPage, SqlStore, SqlText, TxConn, bind_arg};
use crate::store::{
    EncodedCollector, EncodedContact, EncodedRows, ListRows, ListSession, StoreError, StoreResult,
    collect_encoded,
};

/// How long a cursor stays open while its stream fetches nothing.
const IDLE: Duration = Duration::from_secs(2);
/// The cursor's name: one per transaction, and so per connection.
const CURSOR: &str = "kraiter_list";

/// How many cursors may be open at once.
pub(super) struct Portals {
    permits: Arc<Semaphore>,
}

impl Portals {
    /// A quarter of the pool (at least one), so that streams never hold the
    /// connections the other calls need.
    pub fn new(max_connections: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new((max_connections / 4).max(1) as usize)),
        }
    }
}

/// What a stream's session holds between its queries.
#[derive(Default)]
struct Held {
    /// Queries the stream has made.
    queries: u32,
    /// No cursor for the rest of the stream: its last one was closed while idle.
    page_queries_only: bool,
    cursor: Option<Cursor>,
}

/// An open cursor and where it stands.
struct Cursor {
    tx: PgTx,
    /// `None` until its first fetch, which is the query that opened it.
    at: Option<Position>,
    /// Fetches so far, so that the idle timer knows whether one came after it.
    fetches: u64,
    _permit: OwnedSemaphorePermit,
}

/// Where a cursor stands: after `last`, the last row fetched. A stream asks for one
/// row more than it keeps, to tell whether more follow, and resumes after the row
/// before that one; `last` is then the first row of its next query.
struct Position {
    last: EncodedContact,
    /// The key of the row fetched before `last`, if any.
    before_last: Option<ContactKey>,
}

/// `BackendContacts::stream_contacts` on PostgreSQL: a search's queries after the
/// first fetch from a cursor when one is (or can be) open; anything else is a page
/// query.
pub(super) async fn stream_contacts(
    store: &PgStore,
    session: &ListSession,
    page: ContactPage<'_>,
) -> StoreResult<EncodedRows> {
    if page.query.search.is_none() {
        return BackendContacts::list_contacts(store, page).await;
    }
    let mut guard = session.lock().await;
    let held = guard.get_or_insert_with(|| Box::new(Held::default()) as Box<dyn Any + Send>);
    let Some(held) = held.downcast_mut::<Held>() else {
        return Err(StoreError::internal("a list session of another store"));
    };
    held.queries += 1;
    if held.queries == 1 || held.page_queries_only {
        drop(guard);
        return BackendContacts::list_contacts(store, page).await;
    }
    // A cursor at the stream's position goes on; one elsewhere is closed.
    let (cursor, carried) = match held.cursor.take().and_then(|c| c.resumed(page.after)) {
        Some((cursor, carried)) => (Some(cursor), carried),
        None => (open(store, &page).await, None),
    };
    let Some(mut cursor) = cursor else {
        drop(guard);
        return BackendContacts::list_contacts(store, page).await;
    };
    // The carried row's encoded size stands in for its `row_bytes`.
    let carried_bytes = carried.as_ref().map_or(0, EncodedContact::size);
    let ask = page.limit - u32::from(carried.is_some());
    let fetched = if ask == 0 {
        Ok(ListRows::default())
    } else {
        let max_bytes = page.max_bytes.saturating_sub(carried_bytes);
        let collector = EncodedCollector::new(page.encoder, page.query.order, max_bytes);
        fetch(&mut cursor.tx, ask, collector).await
    };
    let fetched = match fetched {
        Ok(fetched) => fetched,
        Err(err) => {
            // Dropped: rolled back and tested off this path. The page query says
            // whether the database itself is failing.
            tracing::debug!(error = %err, "a stream's cursor failed; reading page queries");
            held.page_queries_only = true;
            drop(cursor);
            drop(guard);
            return BackendContacts::list_contacts(store, page).await;
        }
    };
    let at_end = !fetched.cut_short && fetched.items.len() < ask as usize;
    let rows = EncodedRows {
        items: carried.into_iter().chain(fetched.items).collect(),
        cut_short: fetched.cut_short,
    };
    if rows.cut_short {
        // Rows of the fetch are still coming: dropped, the cursor is closed and its
        // connection drained off this path. Rows this large are read by page
        // queries from here on, rather than sorted again for every query.
        held.page_queries_only = true;
        drop(cursor);
    } else if at_end {
        // The statement has ended; a failed commit of a read changes nothing.
        if let Err(err) = cursor.tx.commit().await {
            tracing::debug!(error = %err, "closing a stream's cursor failed");
        }
    } else if let Some(last) = rows.items.last() {
        let before = rows.items.len().checked_sub(2);
        cursor.at = Some(Position {
            last: last.clone(),
            before_last: before.map(|before| rows.items[before].key.clone()),
        });
        cursor.fetches += 1;
        close_when_idle(session, cursor.fetches);
        held.cursor = Some(cursor);
    }
    Ok(rows)
}

impl Cursor {
    /// The cursor, if the stream resumes where it stands, with the row the stream
    /// did not keep (see `Position`) when it resumes before that row.
    fn resumed(self, after: Option<&ContactKey>) -> Option<(Self, Option<EncodedContact>)> {
        let (after, at) = (after?, self.at.as_ref()?);
        if *after == at.last.key {
            return Some((self, None));
        }
        if at.before_last.as_ref() == Some(after) {
            let last = at.last.clone();
            return Some((self, Some(last)));
        }
        None
    }
}

/// A cursor of the page's statement without its `LIMIT`, after the page's position,
/// in a transaction of its own, if one may be opened now; `None` when all that may
/// be open are, or opening failed (the page query then says whether the database
/// is failing). Its first fetch is the page's.
async fn open(store: &PgStore, page: &ContactPage<'_>) -> Option<Cursor> {
    let permit = store.portals.permits.clone().try_acquire_owned().ok()?;
    match declare(store, page).await {
        Ok(tx) => Some(Cursor {
            tx,
            at: None,
            fetches: 0,
            _permit: permit,
        }),
        Err(err) => {
            tracing::debug!(error = %err, "could not open a stream's cursor");
            None
        }
    }
}

async fn declare(store: &PgStore, page: &ContactPage<'_>) -> StoreResult<PgTx> {
    let (clause, _) = list_statement(page.tenant, page.query, page.after);
    let sql = SqlText::new(&format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR ")).push(&clause.sql);
    let conn = store
        .read_heavy(page.from, |conns| async move { conns.get().await })
        .await?;
    let mut tx = PgTx::begin(conn).await?;
    // Planned for all of its rows, not for the first tenth of them (the default).
    tx.conn()
        .execute("SET LOCAL cursor_tuple_fraction = 1")
        .await
        .map_err(classify)?;
    let mut declare = sqlx::query(sql.as_str()).persistent(false);
    for arg in &clause.args {
        declare = bind_arg(declare, arg);
    }
    declare.execute(tx.conn()).await.map_err(classify)?;
    Ok(tx)
}

/// Up to `limit` rows of the cursor, as many as `collector` takes (at least one).
async fn fetch(
    tx: &mut PgTx,
    limit: u32,
    collector: EncodedCollector<'_>,
) -> StoreResult<EncodedRows> {
    let sql = format!("FETCH FORWARD {limit} FROM {CURSOR}");
    let rows = sqlx::query(&sql).persistent(false).fetch(tx.conn());
    collect_encoded(rows, collector, ref_from_row, classify).await
}

/// Closes the session's cursor if it has fetched nothing `IDLE` after its fetch
/// number `fetches`; the rest of the stream is then read by page queries.
fn close_when_idle(session: &ListSession, fetches: u64) {
    let session = session.downgrade();
    tokio::spawn(async move {
        tokio::time::sleep(IDLE).await;
        // The stream ended meanwhile: its cursor went with it.
        let Some(session) = session.upgrade() else {
            return;
        };
        let mut guard = session.lock().await;
        let Some(held) = guard.as_mut().and_then(|held| held.downcast_mut::<Held>()) else {
            return;
        };
        if held.cursor.as_ref().is_none_or(|c| c.fetches != fetches) {
            return;
        }
        held.page_queries_only = true;
        let cursor = held.cursor.take();
        drop(guard);
        if let Some(cursor) = cursor
            && let Err(err) = cursor.tx.commit().await
        {
            tracing::debug!(error = %err, "closing an idle stream's cursor failed");
        }
    });
}
