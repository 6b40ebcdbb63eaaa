//! Streams a keyset-paginated list one page per message. The next page's query runs
//! while the current page is converted and sent, so the database and the server work
//! at the same time; a channel of one slot holds at most one page ahead of the client.
//! Everything stops as soon as the client goes away, even in the middle of a query.
//!
//! A page holds at most `limit` items and, unless it holds one, at most
//! `--max-page-bytes` encoded: a page of large items would otherwise pass the 4 MiB
//! every stock gRPC client accepts by default. How many streams may be open at once is
//! bounded too, in all and per tenant (`admission`).

mod admission;
mod reader;

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use super::ApiError;
use crate::domain::{PageSize, TenantId};
use crate::store::StoreResult;
use admission::{Admission, StreamPermit};
use reader::{Page, PageReader};

pub type PageStream<M> = ReceiverStream<Result<M, Status>>;

tokio::task_local! {
    /// The RPC being handled (set by `handle`), so streams count messages by method.
    pub(super) static RPC_METHOD: &'static str;
}

/// Limits of the streamed lists.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Most bytes a page takes encoded, unless it holds one item.
    pub max_page_bytes: usize,
    /// Streams open at once, in all and per tenant.
    pub max_streams: u32,
    pub max_streams_per_tenant: u32,
}

/// What the streams of one server share: their limits and the count of open ones.
#[derive(Clone)]
pub struct Streams {
    max_page_bytes: usize,
    admission: Arc<Admission>,
}

impl Streams {
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            max_page_bytes: limits.max_page_bytes,
            admission: Admission::new(limits.max_streams, limits.max_streams_per_tenant),
        }
    }

    /// One more stream of `tenant`, or RESOURCE_EXHAUSTED when the server or the
    /// tenant has as many open as it may. Ask before any database work.
    pub(crate) fn admit(&self, tenant: &TenantId) -> Result<Admitted, ApiError> {
        Ok(Admitted {
            permit: self.admission.admit(tenant)?,
            max_page_bytes: self.max_page_bytes,
        })
    }
}

/// A stream let in: its place among the open streams, and its limits.
pub(crate) struct Admitted {
    permit: StreamPermit,
    max_page_bytes: usize,
}

impl Admitted {
    /// Streams the pages of `pager`'s list from a task of its own, which holds the
    /// stream's place until the stream ends, whatever ends it.
    pub fn spawn<K, Item, Elem, Msg, Fetch, Fut, Key, Convert, Message>(
        self,
        pager: Pager<K, Item, Fetch, Key, Convert, Message>,
    ) -> PageStream<Msg>
    where
        K: Clone + Send + 'static,
        Item: Send + 'static,
        Elem: prost::Message + Send + 'static,
        Msg: Send + 'static,
        Fetch: Fn(Option<K>, u32) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<Vec<Item>>> + Send + 'static,
        Key: Fn(&Item) -> K + Send + 'static,
        Convert: Fn(Item) -> Result<Elem, ApiError> + Send + 'static,
        Message: Fn(Vec<Elem>, Option<K>) -> Msg + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(1);
        let method = RPC_METHOD.try_with(|method| *method).unwrap_or("unknown");
        let span = tracing::Span::current();
        let budget = self.max_page_bytes;
        tokio::spawn(send_pages(self.permit, pager, budget, tx, method).instrument(span));
        ReceiverStream::new(rx)
    }
}

/// How to walk one list.
pub struct Pager<K, Item, Fetch, Key, Convert, Message> {
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
    /// pages per query (see `reader::QUERY_BYTES`); without, one page per query.
    pub size: Option<fn(&Item) -> usize>,
    /// Converts an item into its element of the page message (field 1 of every page
    /// message). Each item is converted as it is put in a page, so that the page ends
    /// before the element that would take it past its byte budget.
    pub convert: Convert,
    /// Builds the page message from its elements and the key to resume after it
    /// (`None` on the last page).
    pub message: Message,
}

/// Sends every page of the list until it ends, `max_pages` are sent, something fails or
/// the client goes away.
async fn send_pages<K, Item, Elem, Msg, Fetch, Fut, Key, Convert, Message>(
    _permit: StreamPermit,
    pager: Pager<K, Item, Fetch, Key, Convert, Message>,
    budget: usize,
    tx: mpsc::Sender<Result<Msg, Status>>,
    method: &'static str,
) where
    Item: Send + 'static,
    Elem: prost::Message,
    Fetch: Fn(Option<K>, u32) -> Fut,
    Fut: Future<Output = StoreResult<Vec<Item>>> + Send + 'static,
    Key: Fn(&Item) -> K,
    Convert: Fn(Item) -> Result<Elem, ApiError>,
    Message: Fn(Vec<Elem>, Option<K>) -> Msg,
{
    let mut reader = PageReader::new(
        pager.fetch,
        pager.key,
        pager.convert,
        pager.size,
        pager.page_size,
        budget,
        pager.max_pages,
    );
    reader.start(pager.after, 1);
    let mut sender = PageSender {
        tx,
        message: pager.message,
        method,
        max_pages: pager.max_pages,
        pages: 0,
        items: 0,
        building: Duration::ZERO,
        waited_client: Duration::ZERO,
    };
    loop {
        let page = match reader.next_page(sender.pages, sender.tx.closed()).await {
            Some(Ok(page)) => page,
            Some(Err(err)) => {
                fail(&sender.tx, err).await;
                break;
            }
            None => break,
        };
        if sender.send(page).await.is_break() {
            break;
        }
    }
    // Where the stream's time went: waiting for the database, converting rows and
    // building messages, waiting for the client.
    tracing::debug!(
        pages = sender.pages,
        items = sender.items,
        waited_db = ?reader.waited_db,
        building = ?(reader.converting + sender.building),
        waited_client = ?sender.waited_client,
        "stream finished"
    );
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
    /// client went away, or the last of `max_pages` went out.
    async fn send<Elem, K>(&mut self, page: Page<Elem, K>) -> ControlFlow<()>
    where
        Message: Fn(Vec<Elem>, Option<K>) -> Msg,
    {
        self.pages += 1;
        self.items += page.items.len();
        let began = Instant::now();
        let msg = (self.message)(page.items, page.resume);
        self.building += began.elapsed();
        let began = Instant::now();
        let sent = self.tx.send(Ok(msg)).await;
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
