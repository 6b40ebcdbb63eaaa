//! Streams a keyset-paginated list one page per message. The next page's query runs
//! while the current page is converted and sent, so the database and the server work
//! at the same time; a channel of one slot holds at most one page ahead of the client.
//! Everything stops as soon as the client goes away, even in the middle of a query.

use std::future::Future;
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
/// prefetch running. Also holds how many pages the query asked for.
struct Prefetch<T>(JoinHandle<T>, u32);

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        self.0.abort();
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
    let task = async move {
        let Pager {
            page_size,
            max_pages,
            after,
            fetch,
            key,
            size,
            message,
        } = pager;
        let limit = page_size.get();
        // `pages` pages in one query. One extra row tells whether more follow, so
        // the last page carries an empty cursor instead of forcing an empty final page.
        let start = move |after: Option<K>, pages: u32| {
            Prefetch(
                tokio::spawn(fetch(after, limit * pages + 1).instrument(tracing::Span::current())),
                pages,
            )
        };
        let mut next = Some(start(after, 1));
        let mut pages = 0u32;
        let mut items = 0usize;
        // Where the stream's time went, for the debug line at its end: waiting for
        // the database, building messages, waiting for the client.
        let (mut waited_db, mut building, mut waited_client) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        'stream: while let Some(mut pending) = next.take() {
            let began = Instant::now();
            let fetched = tokio::select! {
                _ = tx.closed() => break,
                joined = &mut pending.0 => joined,
            };
            waited_db += began.elapsed();
            // A join error is the query's task panicking (it is never aborted here).
            let mut rows = match fetched.unwrap_or_else(|join| Err(StoreError::internal(join))) {
                Ok(rows) => rows,
                Err(err) => {
                    let _ = tx.send(Err(Status::from(ApiError::from(err)))).await;
                    break;
                }
            };
            let asked = pending.1;
            let has_more = rows.len() > (limit * asked) as usize;
            rows.truncate((limit * asked) as usize);
            let in_fetch = (rows.len().div_ceil(limit as usize) as u32).max(1);
            let left = max_pages.map_or(u32::MAX, |max| max.saturating_sub(pages + in_fetch));
            if has_more && left > 0 {
                // A long stream fetches more pages per query (up to MAX_PAGES_PER_QUERY
                // and about QUERY_BYTES of rows), so the database is not idle between
                // queries while the last rows of one are read and the next is sent.
                let bytes: usize = size.map_or(0, |size| rows.iter().map(size).sum());
                let grow = size.is_some() && bytes * 2 <= QUERY_BYTES;
                let ask = if grow { asked * 2 } else { asked };
                let resume = rows.last().map(&key);
                next = Some(start(resume, ask.min(MAX_PAGES_PER_QUERY).min(left)));
            }
            let mut rest = rows.into_iter();
            for n in 1..=in_fetch {
                let page: Vec<Item> = rest.by_ref().take(limit as usize).collect();
                pages += 1;
                items += page.len();
                let more = n < in_fetch || has_more;
                let resume = if more { page.last().map(&key) } else { None };
                let began = Instant::now();
                let built = message(page, resume);
                building += began.elapsed();
                let began = Instant::now();
                let sent = match built {
                    Ok(msg) => tx.send(Ok(msg)).await,
                    Err(err) => {
                        let _ = tx.send(Err(Status::from(err))).await;
                        break 'stream;
                    }
                };
                waited_client += began.elapsed();
                if sent.is_err() {
                    tracing::debug!(pages, items, "client went away mid-stream");
                    break 'stream;
                }
                crate::metrics::record_stream_message(method);
                if max_pages.is_some_and(|max| pages >= max) {
                    break 'stream;
                }
            }
        }
        tracing::debug!(
            pages,
            items,
            ?waited_db,
            ?building,
            ?waited_client,
            "stream finished"
        );
    };
    tokio::spawn(task.instrument(span));
    ReceiverStream::new(rx)
}
