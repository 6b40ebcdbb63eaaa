//! Auto-paging: turns a server-streamed list (one message per page, each with the
//! cursor that resumes after it) into a stream of items that survives a broken
//! connection by reopening the list from the last cursor it received.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream;
use tonic::{Status, Streaming};

use super::error::{ClientError, retry_after};
use crate::api::pb;

/// A stream of list items; an error ends it.
pub type ItemStream<T> = Pin<Box<dyn Stream<Item = Result<T, ClientError>> + Send>>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Opens the server stream of a list for one request.
pub(crate) type Open<Req, Resp> =
    Arc<dyn Fn(Req) -> BoxFuture<Result<Streaming<Resp>, Status>> + Send + Sync>;

/// How often and how patiently a broken call is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after a failure, in a row; a page received resets the count.
    pub max_retries: u32,
    /// Wait before the first retry; doubles on each further one.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts. A RATE_LIMITED call whose `RetryInfo` asks
    /// for a longer wait is not retried: its error, with `retry_after`, is returned.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries: every failure is returned as it happens.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The wait before retry number `attempt` (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// A list request: it can be pointed at a cursor and limited in pages.
pub(crate) trait PagedRequest: Clone + Send + 'static {
    fn set_cursor(&mut self, cursor: String);
    fn max_pages(&self) -> i32;
    fn set_max_pages(&mut self, pages: i32);
}

/// A page of a list: its items and the cursor after it (empty on the last page).
pub(crate) trait Page: Send + 'static {
    type Item: Send + 'static;
    fn into_parts(self) -> (Vec<Self::Item>, String);
}

macro_rules! paged {
    ($request:ty => $response:ty, $items:ident: $item:ty) => {
        impl PagedRequest for $request {
            fn set_cursor(&mut self, cursor: String) {
                self.cursor = cursor;
            }
            fn max_pages(&self) -> i32 {
                self.max_pages
            }
            fn set_max_pages(&mut self, pages: i32) {
                self.max_pages = pages;
            }
        }
        impl Page for $response {
            type Item = $item;
            fn into_parts(self) -> (Vec<$item>, String) {
                (self.$items, self.next_cursor)
            }
        }
    };
}

paged!(pb::ListContactsRequest => pb::ListContactsResponse, contacts: pb::Contact);
paged!(pb::ListContactSendsRequest => pb::ListContactSendsResponse, sends: pb::Send);
paged!(
    pb::ListContactScheduledSendsRequest => pb::ListContactScheduledSendsResponse,
    scheduled_sends: pb::ScheduledSend
);
paged!(
    pb::ListContactTimelineRequest => pb::ListContactTimelineResponse,
    entries: pb::TimelineEntry
);

struct Pager<Req, Resp> {
    open: Open<Req, Resp>,
    /// The request to (re)open the list with: its cursor follows the pages received.
    request: Req,
    stream: Option<Streaming<Resp>>,
    retry: RetryPolicy,
    failures: u32,
    done: bool,
}

impl<Req: PagedRequest, Resp: Page> Pager<Req, Resp> {
    /// The next page, reopening the list after a retryable failure.
    async fn next_page(&mut self) -> Option<Result<Vec<Resp::Item>, ClientError>> {
        loop {
            if self.done {
                return None;
            }
            let result = match self.stream.as_mut() {
                Some(stream) => stream.message().await,
                None => match (self.open)(self.request.clone()).await {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        continue;
                    }
                    Err(status) => Err(status),
                },
            };
            match result {
                Ok(Some(page)) => {
                    self.failures = 0;
                    return Some(Ok(self.advance(page)));
                }
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(status) => {
                    self.failures += 1;
                    let Some(wait) = retry_after(&status, self.failures, &self.retry) else {
                        self.done = true;
                        return Some(Err(status.into()));
                    };
                    self.stream = None;
                    tracing::debug!(
                        code = ?status.code(),
                        attempt = self.failures,
                        "list stream failed; resuming from the last cursor"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Moves the request past `page`: its cursor, and one page fewer to go.
    fn advance(&mut self, page: Resp) -> Vec<Resp::Item> {
        let (items, next_cursor) = page.into_parts();
        if next_cursor.is_empty() {
            self.done = true;
        } else {
            self.request.set_cursor(next_cursor);
        }
        match self.request.max_pages() {
            0 => {}
            1 => self.done = true,
            left => self.request.set_max_pages(left - 1),
        }
        items
    }
}

/// Streams the items of every page of the list that `open` opens for `request`.
pub(crate) fn items<Req, Resp>(
    open: Open<Req, Resp>,
    request: Req,
    retry: RetryPolicy,
) -> ItemStream<Resp::Item>
where
    Req: PagedRequest,
    Resp: Page,
{
    let pager = Pager {
        open,
        request,
        stream: None,
        retry,
        failures: 0,
        done: false,
    };
    let pages = stream::unfold(pager, |mut pager| async move {
        let page = pager.next_page().await?;
        Some((page, pager))
    });
    let items = pages.flat_map(|page| {
        let items: Vec<Result<Resp::Item, ClientError>> = match page {
            Ok(items) => items.into_iter().map(Ok).collect(),
            Err(err) => vec![Err(err)],
        };
        stream::iter(items)
    });
    Box::pin(items)
}
