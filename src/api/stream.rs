//! Streams a keyset-paginated list one page per message. The next page's query runs
//! while the current page is converted and sent, so the database and the server work
//! at the same time; a channel of one slot holds at most one page ahead of the client.
//! Everything stops as soon as the client goes away, even in the middle of a query.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use super::ApiError;
use crate::domain::PageSize;
use crate::store::{StoreError, StoreResult};

pub type PageStream<M> = ReceiverStream<Result<M, Status>>;

/// Most pages one query fetches.
const MAX_PAGES_PER_QUERY: u32 = 8;
/// A query grows (doubling from one page) while its rows stay under about this many
/// bytes, so a stream holds a few MB at most: one query's rows being sent, the next
/// query's arriving, a page in the channel.
const QUERY_BYTES: usize = 2 << 20;

tokio::task_local! {
    /// The RPC being handled (set by `handle`), so streams count messages by method.
    pub(super) static RPC_METHOD: &'static str;
}

/// How to walk one list.
pub struct Pager<K, Item, Fetch, Key, Message> {
    pub page_size: PageSize,
    /// `None` streams to the end.
    pub max_pages: Option<u32>,
    /// Keyset key to resume after; `None` starts at the beginning.
    pub after: Option<K>,
    /// Fetches up to `limit` items after the key.
    pub fetch: Fetch,
    /// Keyset key of an item.
    pub key: Key,
    /// Roughly how many bytes an item holds. With it, a long stream asks for more
    /// pages per query (see `QUERY_BYTES`); without, one page per query.
    pub size: Option<fn(&Item) -> usize>,
    /// Builds the response message from a page and the key to resume after it
    /// (`None` on the last page). Conversion that can fail belongs here rather than
    /// in `fetch`, so that it overlaps the next page's query.
    pub message: Message,
}

/// Aborts the query it holds when dropped: a client that goes away must not leave a
/// prefetch running.
struct Prefetch<T> {
    query: JoinHandle<T>,
    /// How many pages the query asked for.
    pages: u32,
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        self.query.abort();
    }
}

pub fn spawn<K, Item, Msg, Fetch, Fut, Key, Message>(
    pager: Pager<K, Item, Fetch, Key, Message>,
) -> PageStream<Msg>
where
    K: Clone + Send + 'static,
    Item: Send + 'static,
    Msg: Send + 'static,
    Fetch: Fn(Option<K>, u32) -> Fut + Send + 'static,
    Fut: Future<Output = StoreResult<Vec<Item>>> + Send + 'static,
    Key: Fn(&Item) -> K + Send + 'static,
    Message: Fn(Vec<Item>, Option<K>) -> Result<Msg, ApiError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(1);
    let method = RPC_METHOD.try_with(|method| *method).unwrap_or("unknown");
    let span = tracing::Span::current();
    tokio::spawn(send_pages(pager, tx, method).instrument(span));
    ReceiverStream::new(rx)
}

/// Sends every page of the list until it ends, `max_pages` are sent, something fails or
/// the client goes away.
async fn send_pages<K, Item, Msg, Fetch, Fut, Key, Message>(
    pager: Pager<K, Item, Fetch, Key, Message>,
    tx: mpsc::Sender<Result<Msg, Status>>,
    method: &'static str,
) where
    Item: Send + 'static,
    Fetch: Fn(Option<K>, u32) -> Fut,
    Fut: Future<Output = StoreResult<Vec<Item>>> + Send + 'static,
    Key: Fn(&Item) -> K,
    Message: Fn(Vec<Item>, Option<K>) -> Result<Msg, ApiError>,
{
    let (mut reader, mut sender) = pager.into_reader_and_sender(tx, method);
    loop {
        let page = match reader.next_page(sender.pages, sender.tx.closed()).await {
            Some(Ok(page)) => page,
            Some(Err(err)) => {
                fail(&sender.tx, ApiError::from(err)).await;
                break;
            }
            None => break,
        };
        if sender.send(page).await.is_break() {
            break;
        }
    }
    // Where the stream's time went: waiting for the database, building messages,
    // waiting for the client.
    tracing::debug!(
        pages = sender.pages,
        items = sender.items,
        waited_db = ?reader.waited_db,
        building = ?sender.building,
        waited_client = ?sender.waited_client,
        "stream finished"
    );
}

impl<K, Item, Fetch, Fut, Key, Message> Pager<K, Item, Fetch, Key, Message>
where
    Item: Send + 'static,
    Fetch: Fn(Option<K>, u32) -> Fut,
    Fut: Future<Output = StoreResult<Vec<Item>>> + Send + 'static,
    Key: Fn(&Item) -> K,
{
    /// Splits the walk into the reader of its pages, with the first query (of one page,
    /// so the first page comes as fast as it can) started, and their sender.
    fn into_reader_and_sender<Msg>(
        self,
        tx: mpsc::Sender<Result<Msg, Status>>,
        method: &'static str,
    ) -> (PageReader<Item, Fetch, Key>, PageSender<Msg, Message>) {
        let mut reader = PageReader {
            fetch: self.fetch,
            key: self.key,
            size: self.size,
            limit: self.page_size.get(),
            max_pages: self.max_pages,
            next: None,
            batch: None,
            waited_db: Duration::ZERO,
        };
        reader.start(self.after, 1);
        let sender = PageSender {
            tx,
            message: self.message,
            method,
            max_pages: self.max_pages,
            pages: 0,
            items: 0,
            building: Duration::ZERO,
            waited_client: Duration::ZERO,
        };
        (reader, sender)
    }
}

/// One page of a list and the key to resume after it (`None` on the last page).
struct Page<Item, K> {
    items: Vec<Item>,
    resume: Option<K>,
}

/// One query's rows, cut to the pages it asked for and handed out a page at a time.
struct Batch<Item> {
    rows: std::vec::IntoIter<Item>,
    /// Pages still to hand out; an empty list still has one, empty, page.
    pages: u32,
    /// Whether rows follow the batch's last one.
    has_more: bool,
}

/// Reads a list page by page, one query ahead: the next query starts as soon as a
/// query's rows are in, so it runs while they are converted and sent.
struct PageReader<Item, Fetch, Key> {
    fetch: Fetch,
    key: Key,
    size: Option<fn(&Item) -> usize>,
    limit: u32,
    max_pages: Option<u32>,
    /// The query whose rows come after `batch`'s; `None` when no more are due.
    next: Option<Prefetch<StoreResult<Vec<Item>>>>,
    /// The rows of the last query that are not handed out yet.
    batch: Option<Batch<Item>>,
    /// Time spent waiting for the database, for the debug line at the stream's end.
    waited_db: Duration,
}

impl<K, Item, Fetch, Fut, Key> PageReader<Item, Fetch, Key>
where
    Item: Send + 'static,
    Fetch: Fn(Option<K>, u32) -> Fut,
    Fut: Future<Output = StoreResult<Vec<Item>>> + Send + 'static,
    Key: Fn(&Item) -> K,
{
    /// Starts the query of `pages` pages after `after`. One extra row tells whether more
    /// follow, so the last page carries an empty cursor instead of forcing an empty final
    /// page.
    fn start(&mut self, after: Option<K>, pages: u32) {
        let query = (self.fetch)(after, self.limit * pages + 1);
        self.next = Some(Prefetch {
            query: tokio::spawn(query.instrument(tracing::Span::current())),
            pages,
        });
    }

    /// The next page, waiting for its query if it is not in yet. `None` at the end of
    /// the list, or when `closed` (the client going away) resolves first.
    async fn next_page(
        &mut self,
        pages_sent: u32,
        closed: impl Future<Output = ()>,
    ) -> Option<StoreResult<Page<Item, K>>> {
        let mut batch = match self.batch.take() {
            Some(batch) => batch,
            None => match self.next_batch(pages_sent, closed).await? {
                Ok(batch) => batch,
                Err(err) => return Some(Err(err)),
            },
        };
        let items: Vec<Item> = batch.rows.by_ref().take(self.limit as usize).collect();
        batch.pages -= 1;
        let more = batch.pages > 0 || batch.has_more;
        let resume = if more {
            items.last().map(&self.key)
        } else {
            None
        };
        if batch.pages > 0 {
            self.batch = Some(batch);
        }
        Some(Ok(Page { items, resume }))
    }

    /// The rows of the query in flight, once they are in; starts the query after them
    /// when more pages are due.
    async fn next_batch(
        &mut self,
        pages_sent: u32,
        closed: impl Future<Output = ()>,
    ) -> Option<StoreResult<Batch<Item>>> {
        let mut pending = self.next.take()?;
        let began = Instant::now();
        let fetched = tokio::select! {
            _ = closed => return None,
            joined = &mut pending.query => joined,
        };
        self.waited_db += began.elapsed();
        // A join error is the query's task panicking (it is never aborted here).
        let mut rows = match fetched.unwrap_or_else(|join| Err(StoreError::internal(join))) {
            Ok(rows) => rows,
            Err(err) => return Some(Err(err)),
        };
        let asked = pending.pages;
        let has_more = rows.len() > (self.limit * asked) as usize;
        rows.truncate((self.limit * asked) as usize);
        let pages = (rows.len().div_ceil(self.limit as usize) as u32).max(1);
        let left = self
            .max_pages
            .map_or(u32::MAX, |max| max.saturating_sub(pages_sent + pages));
        if has_more && left > 0 {
            self.start_after(&rows, asked, left);
        }
        Some(Ok(Batch {
            rows: rows.into_iter(),
            pages,
            has_more,
        }))
    }

    /// Starts the query after `rows`, at most `left` pages. A long stream fetches more
    /// pages per query (doubling up to MAX_PAGES_PER_QUERY while a query's rows stay
    /// under QUERY_BYTES), so the database is not idle between queries while the last
    /// rows of one are read and the next is sent. Without `size`, one page per query.
    fn start_after(&mut self, rows: &[Item], asked: u32, left: u32) {
        let bytes: usize = self.size.map_or(0, |size| rows.iter().map(size).sum());
        let grow = self.size.is_some() && bytes * 2 <= QUERY_BYTES;
        let ask = if grow { asked * 2 } else { asked };
        let resume = rows.last().map(&self.key);
        self.start(resume, ask.min(MAX_PAGES_PER_QUERY).min(left));
    }
}

/// Sends a stream's pages to the client, counting them.
struct PageSender<Msg, Message> {
    tx: mpsc::Sender<Result<Msg, Status>>,
    message: Message,
    method: &'static str,
    max_pages: Option<u32>,
    pages: u32,
    items: usize,
    /// Time spent building messages and waiting for the client, for the debug line at
    /// the stream's end.
    building: Duration,
    waited_client: Duration,
}

impl<Msg, Message> PageSender<Msg, Message> {
    /// Builds and sends the message of `page`. `Break` when the stream ends here: the
    /// message failed, the client went away, or the last of `max_pages` went out.
    async fn send<Item, K>(&mut self, page: Page<Item, K>) -> ControlFlow<()>
    where
        Message: Fn(Vec<Item>, Option<K>) -> Result<Msg, ApiError>,
    {
        self.pages += 1;
        self.items += page.items.len();
        let began = Instant::now();
        let built = (self.message)(page.items, page.resume);
        self.building += began.elapsed();
        let began = Instant::now();
        let sent = match built {
            Ok(msg) => self.tx.send(Ok(msg)).await,
            Err(err) => {
                fail(&self.tx, err).await;
                return ControlFlow::Break(());
            }
        };
        self.waited_client += began.elapsed();
        if sent.is_err() {
            let (pages, items) = (self.pages, self.items);
            tracing::debug!(pages, items, "client went away mid-stream");
            return ControlFlow::Break(());
        }
        crate::metrics::record_stream_message(self.method);
        if self.max_pages.is_some_and(|max| self.pages >= max) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Ends the stream with `err`'s status.
async fn fail<Msg>(tx: &mpsc::Sender<Result<Msg, Status>>, err: ApiError) {
    let _ = tx.send(Err(Status::from(err))).await;
}
