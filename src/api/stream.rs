//! Streams a keyset-paginated list one page per message. A task fetches pages into
//! a channel of one slot, so at most one page waits ahead of the client; it stops
//! as soon as the client goes away, even in the middle of a query.

use std::future::Future;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use super::ApiError;
use crate::domain::PageSize;
use crate::store::StoreResult;

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
    /// (`None` on the last page).
    pub message: Message,
}

pub fn spawn<K, Item, Msg, Fetch, Fut, Key, Message>(
    pager: Pager<K, Fetch, Key, Message>,
) -> PageStream<Msg>
where
    K: Clone + Send + 'static,
    Item: Send + 'static,
    Msg: Send + 'static,
    Fetch: Fn(Option<K>, u32) -> Fut + Send + 'static,
    Fut: Future<Output = StoreResult<Vec<Item>>> + Send,
    Key: Fn(&Item) -> K + Send + 'static,
    Message: Fn(Vec<Item>, Option<K>) -> Msg + Send + 'static,
{
    let (tx, rx) = mpsc::channel(1);
    let method = RPC_METHOD.try_with(|method| *method).unwrap_or("unknown");
    let task = async move {
        let Pager {
            page_size,
            max_pages,
            mut after,
            fetch,
            key,
            message,
        } = pager;
        let limit = page_size.get();
        let mut pages = 0u32;
        let mut items = 0usize;
        loop {
            // One extra row tells whether another page follows, so the last page
            // carries an empty cursor instead of forcing an empty final page.
            let fetched = tokio::select! {
                _ = tx.closed() => break,
                fetched = fetch(after.clone(), limit + 1) => fetched,
            };
            let mut page = match fetched {
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
            after = page.last().map(&key);
            let next = if has_more { after.clone() } else { None };
            if tx.send(Ok(message(page, next))).await.is_err() {
                tracing::debug!(pages, items, "client went away mid-stream");
                break;
            }
            crate::metrics::record_stream_message(method);
            if !has_more || max_pages.is_some_and(|max| pages >= max) {
                break;
            }
        }
        tracing::debug!(pages, items, "stream finished");
    };
    tokio::spawn(task.instrument(tracing::Span::current()));
    ReceiverStream::new(rx)
}
