//! Streams a keyset-paginated list one page per message. The next page's query runs
//! while the current page is converted and sent, so the database and the server work
//! at the same time; a channel of one slot holds at most one page ahead of the client.
//! Everything stops as soon as the client goes away, even in the middle of a query.

use std::future::Future;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use super::ApiError;
use crate::domain::PageSize;
use crate::store::{StoreError, StoreResult};

pub type PageStream<M> = ReceiverStream<Result<M, Status>>;

tokio::task_local! {
    /// The RPC being handled (set by `handle`), so streams count messages by method.
    pub(super) static RPC_METHOD: &'static str;
}

/// How to walk one list.
pub struct Pager<K, Fetch, Key, Message> {
    pub page_size: PageSize,
    /// `None` streams to the end.
    pub max_pages: Option<u32>,
    /// Keyset key to resume after; `None` starts at the beginning.
    pub after: Option<K>,
    /// Fetches up to `limit` items after the key.
    pub fetch: Fetch,
    /// Keyset key of an item.
    pub key: Key,
    /// Builds the response message from a page and the key to resume after it
    /// (`None` on the last page). Conversion that can fail belongs here rather than
    /// in `fetch`, so that it overlaps the next page's query.
    pub message: Message,
}

/// Aborts the query it holds when dropped: a client that goes away must not leave a
/// prefetch running.
struct Prefetch<T>(JoinHandle<T>);

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn spawn<K, Item, Msg, Fetch, Fut, Key, Message>(
    pager: Pager<K, Fetch, Key, Message>,
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
            message,
        } = pager;
        let limit = page_size.get();
        // One extra row tells whether another page follows, so the last page
        // carries an empty cursor instead of forcing an empty final page.
        let start = move |after: Option<K>| {
            Prefetch(tokio::spawn(
                fetch(after, limit + 1).instrument(tracing::Span::current()),
            ))
        };
        let mut next = Some(start(after));
        let mut pages = 0u32;
        let mut items = 0usize;
        while let Some(mut pending) = next.take() {
            let fetched = tokio::select! {
                _ = tx.closed() => break,
                joined = &mut pending.0 => joined,
            };
            // A join error is the query's task panicking (it is never aborted here).
            let mut page = match fetched.unwrap_or_else(|join| Err(StoreError::internal(join))) {
                Ok(page) => page,
                Err(err) => {
                    let _ = tx.send(Err(Status::from(ApiError::from(err)))).await;
                    break;
                }
            };
            let has_more = page.len() > limit as usize;
            page.truncate(limit as usize);
            pages += 1;
            items += page.len();
            let resume = if has_more {
                page.last().map(&key)
            } else {
                None
            };
            let last_page = resume.is_none() || max_pages.is_some_and(|max| pages >= max);
            if !last_page {
                next = Some(start(resume.clone()));
            }
            let sent = match message(page, resume) {
                Ok(msg) => tx.send(Ok(msg)).await,
                Err(err) => {
                    let _ = tx.send(Err(Status::from(err))).await;
                    break;
                }
            };
            if sent.is_err() {
                tracing::debug!(pages, items, "client went away mid-stream");
                break;
            }
            crate::metrics::record_stream_message(method);
        }
        tracing::debug!(pages, items, "stream finished");
    };
    tokio::spawn(task.instrument(span));
    ReceiverStream::new(rx)
}
