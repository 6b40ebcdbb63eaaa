//! Reads a list page by page, one query ahead, and cuts the pages: at `limit` items,
//! or before the item that would take a page past its byte budget. Each query's task
//! converts its own rows once the next query is started, so reading, converting and
//! sending run at once on a stream that reads to its end.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::Fetched;
use crate::api::ApiError;
use crate::domain::PageSize;
use crate::store::{StoreError, StoreResult};

/// Most pages one query fetches.
const MAX_PAGES_PER_QUERY: u32 = 8;
/// A query grows (doubling from one page) while its rows stay under about this many
/// bytes, and a store stops a query of large rows at it (`ContactStore::list_contacts`),
/// so a stream holds a few MB at most whatever the rows weigh: one query's rows being
/// sent, the next query's arriving or being converted (its rows and their elements),
/// a page in the channel.
pub const QUERY_BYTES: usize = 2 << 20;
/// Where a store stops a query of rows larger than the growth above expected: twice
/// its target, so a query sized by the rows before it is never cut (a cut leaves the
/// rest of the query for the pool to drain), while a list whose rows grow, or start
/// large, still holds a bounded number of bytes.
pub const QUERY_CUT_BYTES: usize = 2 * QUERY_BYTES;
/// Room a page's budget keeps for its `next_cursor`, which is shorter: a cursor is a
/// keyset key of at most `MAX_KEY_LEN` bytes and a few fixed fields, in base64 (see
/// `PageCursor::decode`'s length check).
const CURSOR_ROOM: usize = 512;

/// One page of a list and the key to resume after it (`None` on the last page).
pub(super) struct Page<Elem, K> {
    pub items: Vec<Elem>,
    pub resume: Option<K>,
}

/// A query in flight, in its own task: the task fetches the rows, says on `fetched`
/// what came (so the next query can start at once), then converts them. Aborts the
/// task when dropped: a client that goes away must not leave a prefetch running.
struct Prefetch<Elem, K> {
    fetched: oneshot::Receiver<StoreResult<Arrived<K>>>,
    task: JoinHandle<Batch<Elem, K>>,
    /// How many pages the query asked for.
    pages: u32,
}

impl<Elem, K> Drop for Prefetch<Elem, K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a query returned, known before its rows are converted.
struct Arrived<K> {
    /// Rows asked for and returned.
    taken: usize,
    /// More rows follow them.
    has_more: bool,
    /// What the rows hold, by `size` (0 without it).
    bytes: usize,
    /// The key of the last of them.
    last: Option<K>,
}

/// An item converted for a page, with its key and its encoded length in the page.
struct Converted<Elem, K> {
    elem: Elem,
    key: K,
    len: usize,
}

/// A query's rows, converted by the query's task: one query's rows are converted
/// while the next query reads and the pages before them go out, on the runtime's
/// other threads, instead of on the stream's after them.
struct Batch<Elem, K> {
    rows: Vec<Converted<Elem, K>>,
    /// The conversion that failed after `rows`: the stream ends there.
    failed: Option<ApiError>,
}

impl<Elem: prost::Message, K> Batch<Elem, K> {
    /// `rows` converted in order until one fails, yielding to the runtime after every
    /// `every` rows: a query of several pages would otherwise hold its worker, and the
    /// calls queued behind it, for as long as all of them take.
    async fn convert<Item>(
        rows: Vec<Item>,
        every: usize,
        key: &impl Fn(&Item) -> K,
        convert: &impl Fn(Item) -> Result<Elem, ApiError>,
    ) -> Self {
        let mut converted = Vec::with_capacity(rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            if i > 0 && i % every == 0 {
                tokio::task::yield_now().await;
            }
            let key = key(&row);
            match convert(row) {
                Ok(elem) => {
                    // As the page's `encoded_len` counts it: field 1 of the page message.
                    let len = prost::encoding::message::encoded_len(1, &elem);
                    converted.push(Converted { elem, key, len });
                }
                Err(err) => {
                    return Self {
                        rows: converted,
                        failed: Some(err),
                    };
                }
            }
        }
        Self {
            rows: converted,
            failed: None,
        }
    }
}

/// Reads a list page by page, one query ahead: the next query starts as soon as a
/// query's rows are in, so it runs while they are converted and sent. A query's
/// connection goes back to the pool as soon as its rows are in, before its task
/// converts them; the reader holds rows, never a connection. A page ends at `limit`
/// items, or before the item that would take it past `budget` bytes; the rows it
/// leaves begin the next page.
pub(super) struct PageReader<K, Item, Elem, Fetch, Key, Convert> {
    fetch: Fetch,
    key: Arc<Key>,
    convert: Arc<Convert>,
    size: Option<fn(&Item) -> usize>,
    limit: u32,
    /// Most bytes the items of a page of more than one take.
    budget: usize,
    max_pages: Option<u32>,
    /// The query whose rows come after `rows`.
    next: Option<Prefetch<Elem, K>>,
    /// Set instead of `next` when rows follow `rows` but their query is not started:
    /// the pages fetched were expected to reach `max_pages`, and pages cut short by
    /// the budget need more.
    unread_after: Option<K>,
    /// Rows of the last query not yet put in a page.
    rows: std::vec::IntoIter<Converted<Elem, K>>,
    /// The conversion that failed after `rows`.
    failed: Option<ApiError>,
    /// The item that ended the last page by not fitting in it: the next one's first.
    carried: Option<Converted<Elem, K>>,
    /// Whether the last page has been handed out.
    done: bool,
    /// Time spent waiting for the database (and the conversion of its rows) and
    /// cutting pages, for the debug line at the stream's end.
    pub waited_db: Duration,
    pub cutting: Duration,
}

impl<K, Item, Elem, Fetch, Fut, Key, Convert> PageReader<K, Item, Elem, Fetch, Key, Convert>
where
    K: Clone + Send + 'static,
    Item: Send + 'static,
    Elem: prost::Message + 'static,
    Fetch: Fn(Option<K>, u32) -> Fut,
    Fut: Future<Output = StoreResult<Fetched<Item>>> + Send + 'static,
    Key: Fn(&Item) -> K + Send + Sync + 'static,
    Convert: Fn(Item) -> Result<Elem, ApiError> + Send + Sync + 'static,
{
    /// A reader with no query started (see `start`). `budget` is the most bytes a
    /// page of more than one item takes encoded, its cursor included.
    pub fn new(
        fetch: Fetch,
        key: Key,
        convert: Convert,
        size: Option<fn(&Item) -> usize>,
        page_size: PageSize,
        budget: usize,
        max_pages: Option<u32>,
    ) -> Self {
        Self {
            fetch,
            key: Arc::new(key),
            convert: Arc::new(convert),
            size,
            limit: page_size.get(),
            budget: budget.saturating_sub(CURSOR_ROOM),
            max_pages,
            next: None,
            unread_after: None,
            rows: Vec::new().into_iter(),
            failed: None,
            carried: None,
            done: false,
            waited_db: Duration::ZERO,
            cutting: Duration::ZERO,
        }
    }

    /// Starts the query of `pages` pages after `after`. One extra row tells whether more
    /// follow, so the last page carries an empty cursor instead of forcing an empty final
    /// page.
    pub fn start(&mut self, after: Option<K>, pages: u32) {
        let (take, limit) = ((self.limit * pages) as usize, self.limit as usize);
        let query = (self.fetch)(after, self.limit * pages + 1);
        let (key, convert, size) = (self.key.clone(), self.convert.clone(), self.size);
        let (tell, fetched) = oneshot::channel();
        let batch = async move {
            let Fetched {
                mut rows,
                cut_short,
            } = match query.await {
                Ok(fetched) => fetched,
                Err(err) => {
                    let _ = tell.send(Err(err));
                    return Batch {
                        rows: Vec::new(),
                        failed: None,
                    };
                }
            };
            let has_more = cut_short || rows.len() > take;
            rows.truncate(take);
            let _ = tell.send(Ok(Arrived {
                taken: rows.len(),
                has_more,
                bytes: size.map_or(0, |size| rows.iter().map(size).sum()),
                last: rows.last().map(&*key),
            }));
            // Let the stream's task, just woken, start the next query before these
            // rows are converted: a task woken from this worker waits in its LIFO
            // slot, which no other worker takes from, until this task yields.
            tokio::task::yield_now().await;
            Batch::convert(rows, limit, &*key, &*convert).await
        };
        self.next = Some(Prefetch {
            fetched,
            task: tokio::spawn(batch.instrument(tracing::Span::current())),
            pages,
        });
    }

    /// The next page, waiting for rows if it needs more than are in. `None` after the
    /// last page, or when `closed` (the client going away) resolves first. An empty
    /// list has one, empty, page.
    pub async fn next_page(
        &mut self,
        pages_sent: u32,
        closed: impl Future<Output = ()>,
    ) -> Option<Result<Page<Elem, K>, ApiError>> {
        if self.done {
            return None;
        }
        let mut closed = pin!(closed);
        // Cutting is timed per page: a clock read per row was a visible part of the
        // export's server CPU in `perf`.
        let (began, waited_before) = (Instant::now(), self.waited_db);
        let (mut items, mut bytes, mut last) = (Vec::new(), 0, None);
        while items.len() < self.limit as usize {
            let item = match self.next_item(pages_sent, closed.as_mut()).await? {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(err) => return Some(Err(err)),
            };
            if !items.is_empty() && bytes + item.len > self.budget {
                self.carried = Some(item);
                break;
            }
            bytes += item.len;
            items.push(item.elem);
            last = Some(item.key);
        }
        let waited = self.waited_db.saturating_sub(waited_before);
        self.cutting += began.elapsed().saturating_sub(waited);
        let more = self.carried.is_some()
            || !self.rows.as_slice().is_empty()
            || self.next.is_some()
            || self.unread_after.is_some();
        self.done = !more;
        let resume = if more { last } else { None };
        Some(Ok(Page { items, resume }))
    }

    /// The list's next item, converted; `Ok(None)` at the end of the list.
    async fn next_item(
        &mut self,
        pages_sent: u32,
        mut closed: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Result<Option<Converted<Elem, K>>, ApiError>> {
        if let Some(item) = self.carried.take() {
            return Some(Ok(Some(item)));
        }
        loop {
            if let Some(row) = self.rows.next() {
                return Some(Ok(Some(row)));
            }
            if let Some(err) = self.failed.take() {
                return Some(Err(err));
            }
            if let Some(after) = self.unread_after.take() {
                self.start(Some(after), 1);
            }
            if self.next.is_none() {
                return Some(Ok(None));
            }
            if let Err(err) = self.next_batch(pages_sent, closed.as_mut()).await? {
                return Some(Err(err.into()));
            }
        }
    }

    /// Takes in the rows of the query in flight, once they are in and converted;
    /// starts the query after them, when more pages are due, as soon as they are
    /// fetched.
    async fn next_batch(
        &mut self,
        pages_sent: u32,
        mut closed: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<StoreResult<()>> {
        let mut pending = self.next.take()?;
        let began = Instant::now();
        let fetched = tokio::select! {
            _ = closed.as_mut() => return None,
            fetched = &mut pending.fetched => fetched,
        };
        let fetch = match fetched {
            Ok(Ok(fetch)) => fetch,
            Ok(Err(err)) => return Some(Err(err)),
            // The task ended without a word: it panicked (it is never aborted here).
            Err(_) => {
                let joined = (&mut pending.task).await;
                return Some(Err(StoreError::internal(match joined {
                    Err(join) => join.to_string(),
                    Ok(_) => "a list query ended without its rows".to_owned(),
                })));
            }
        };
        let asked = pending.pages;
        let pages = fetch.taken.div_ceil(self.limit as usize) as u32;
        let left = self
            .max_pages
            .map_or(u32::MAX, |max| max.saturating_sub(pages_sent + pages));
        if fetch.has_more && left > 0 {
            self.start_after(fetch.last, fetch.bytes, asked, left);
        } else if fetch.has_more {
            self.unread_after = fetch.last;
        }
        let joined = tokio::select! {
            _ = closed => return None,
            joined = &mut pending.task => joined,
        };
        self.waited_db += began.elapsed();
        let batch = match joined {
            Ok(batch) => batch,
            Err(join) => return Some(Err(StoreError::internal(join))),
        };
        if batch.failed.is_some() {
            // The stream ends at the row that failed: nothing after it is read.
            self.next = None;
            self.unread_after = None;
        }
        self.rows = batch.rows.into_iter();
        self.failed = batch.failed;
        Some(Ok(()))
    }

    /// Starts the query after `resume`, at most `left` pages. A long stream fetches more
    /// pages per query (doubling up to MAX_PAGES_PER_QUERY while a query's rows, `bytes`
    /// by `size`, stay under QUERY_BYTES), so the database is not idle between queries while the last
    /// rows of one are read and the next is sent. Without `size`, one page per query.
    fn start_after(&mut self, resume: Option<K>, bytes: usize, asked: u32, left: u32) {
        let grow = self.size.is_some() && bytes * 2 <= QUERY_BYTES;
        let ask = if grow { asked * 2 } else { asked };
        self.start(resume, ask.min(MAX_PAGES_PER_QUERY).min(left));
    }
}

#[cfg(test)]
mod tests;
