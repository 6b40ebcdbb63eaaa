//! Streams a keyset-paginated list one page per message. The next query runs while
//! the rows of the one before are converted and sent, so the database and the server
//! work at the same time; a channel of one slot holds at most one page ahead of the client.
//! Everything stops as soon as the client goes away, even in the middle of a query.
//!
//! A page holds at most `limit` items and, unless it holds one, at most
//! `--max-page-bytes` encoded: a page of large items would otherwise pass the 4 MiB
//! every stock gRPC client accepts by default. How many streams may be open at once is
//! bounded too, in all and per tenant (`admission`), and a stream checks its API key
//! again as it runs, so a revoked key does not go on reading for as long as its
//! client keeps the stream open.

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

use super::{AccessControl, ApiError};
use crate::domain::PageSize;
use crate::store::{Access, StoreResult};
use admission::{Admission, StreamPermit};
use reader::{Page, PageReader};

pub type PageStream<M> = ReceiverStream<Result<M, Status>>;

pub use reader::QUERY_CUT_BYTES;

/// What one query of a list returned. `cut_short`: the store stopped at its byte
/// budget (`QUERY_CUT_BYTES`) before the rows asked for, and more rows follow.
pub struct Fetched<Item> {
    pub rows: Vec<Item>,
    pub cut_short: bool,
}

impl<Item> Fetched<Item> {
    /// A store's rows of a query that may stop at its byte budget.
    pub fn from_rows(rows: crate::store::ListRows<Item>) -> Self {
        Self {
            rows: rows.items,
            cut_short: rows.cut_short,
        }
    }
}

impl<Item> From<Vec<Item>> for Fetched<Item> {
    /// Rows of a query that returned all it was asked for (or the list's end).
    fn from(rows: Vec<Item>) -> Self {
        Self {
            rows,
            cut_short: false,
        }
    }
}

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
    /// Watches (WatchContacts) open at once, in all and per tenant; counted apart
    /// from the lists, since a watch stays open for as long as its client wants.
    pub max_watchers: u32,
    pub max_watchers_per_tenant: u32,
    /// How often a running stream checks its key again.
    pub key_recheck: Duration,
    /// Largest request message (`--max-message-size`), for the refusal of a
    /// streamed request message (ImportContacts) over it.
    pub max_message_size: usize,
    /// Batches an import writes at once (`--import-depth`).
    pub import_depth: u32,
}

/// What the streams of one server share: their limits, the count of open ones, and
/// the access control that checks their keys.
#[derive(Clone)]
pub struct Streams {
    max_page_bytes: usize,
    max_message_size: usize,
    import_depth: u32,
    key_recheck: Duration,
    admission: Arc<Admission>,
    watchers: Arc<Admission>,
    auth: AccessControl,
}

impl Streams {
    pub fn new(limits: StreamLimits, auth: AccessControl) -> Self {
        Self {
            max_page_bytes: limits.max_page_bytes,
            max_message_size: limits.max_message_size,
            import_depth: limits.import_depth,
            key_recheck: limits.key_recheck,
            admission: Admission::new(limits.max_streams, limits.max_streams_per_tenant),
            watchers: Admission::new(limits.max_watchers, limits.max_watchers_per_tenant),
            auth,
        }
    }

    /// One more stream for `access` (just authorized), or RESOURCE_EXHAUSTED when the
    /// server or the tenant has as many open as it may. Ask before any database work.
    pub(crate) fn admit(&self, access: Access) -> Result<Admitted, ApiError> {
        Ok(Admitted {
            permit: self.admission.admit(&access.tenant)?,
            max_page_bytes: self.max_page_bytes,
            key: KeyCheck {
                auth: self.auth.clone(),
                access,
                every: self.key_recheck,
                checked: Instant::now(),
            },
        })
    }
}

impl Streams {
    /// `--max-message-size`.
    pub(crate) fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// `--import-depth`.
    pub(crate) fn import_depth(&self) -> u32 {
        self.import_depth
    }

    /// One more watch for `access`, or RESOURCE_EXHAUSTED past `--max-watchers` or
    /// `--max-watchers-per-tenant`. Ask before any database work.
    pub(crate) fn admit_watcher(&self, access: Access) -> Result<Watcher, ApiError> {
        Ok(Watcher {
            _place: self.watchers.admit(&access.tenant)?,
            key: KeyCheck {
                auth: self.auth.clone(),
                access,
                every: self.key_recheck,
                checked: Instant::now(),
            },
        })
    }
}

/// A watch let in: its place among the open watches (given back when dropped) and
/// its caller's key to check again.
pub(crate) struct Watcher {
    _place: StreamPermit,
    key: KeyCheck,
}

impl Watcher {
    /// UNAUTHENTICATED once the key is found revoked (checked at most every
    /// `--stream-key-recheck`).
    pub async fn check_key(&mut self) -> Result<(), ApiError> {
        self.key.check_if_due().await
    }
}

/// A stream let in: its place among the open streams, its page budget, and its
/// caller's key to check again.
pub(crate) struct Admitted {
    permit: StreamPermit,
    max_page_bytes: usize,
    key: KeyCheck,
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
        Fut: Future<Output = StoreResult<Fetched<Item>>> + Send + 'static,
        Key: Fn(&Item) -> K + Send + Sync + 'static,
        Convert: Fn(Item) -> Result<Elem, ApiError> + Send + Sync + 'static,
        Message: Fn(Vec<Elem>, Option<K>) -> Msg + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(1);
        let method = RPC_METHOD.try_with(|method| *method).unwrap_or("unknown");
        let span = tracing::Span::current();
        tokio::spawn(send_pages(self, pager, tx, method).instrument(span));
        ReceiverStream::new(rx)
    }
}

impl Admitted {
    /// The caller, as authorized when the stream was let in.
    pub fn access(&self) -> &Access {
        &self.key.access
    }

    /// For a stream that runs its own loop (ImportContacts): checks the key again
    /// if `--stream-key-recheck` has passed since it was last found live.
    pub async fn check_key_if_due(&mut self) -> Result<(), ApiError> {
        self.key.check_if_due().await
    }

    /// Charges the tenant's rate limit for one more unit of the stream's work (an
    /// import's batch after its first, which the call's own token paid for).
    pub fn take_token(&self) -> Result<(), ApiError> {
        self.key.auth.take_token(&self.key.access.tenant)
    }
}

/// Checks a stream's key again as the stream runs.
struct KeyCheck {
    auth: AccessControl,
    access: Access,
    every: Duration,
    /// When the key was last found live (first by the call's own authorization).
    checked: Instant,
}

impl KeyCheck {
    /// Checks the key if `every` has passed since it was last found live: a key
    /// revoked meanwhile is UNAUTHENTICATED. Asked before each page, so a stream
    /// whose client reads nothing costs no check.
    async fn check_if_due(&mut self) -> Result<(), ApiError> {
        if self.checked.elapsed() < self.every {
            return Ok(());
        }
        self.auth.recheck(&self.access).await?;
        self.checked = Instant::now();
        Ok(())
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
    /// message). A query's items are converted by its task as soon as they are in,
    /// while the pages before them are sent; a page ends before the element that
    /// would take it past its byte budget.
    pub convert: Convert,
    /// Builds the page message from its elements and the key to resume after it
    /// (`None` on the last page).
    pub message: Message,
}

/// Sends every page of the list until it ends, `max_pages` are sent, something fails
/// (the key found revoked, say) or the client goes away. Holds the stream's place
/// until then.
async fn send_pages<K, Item, Elem, Msg, Fetch, Fut, Key, Convert, Message>(
    admitted: Admitted,
    pager: Pager<K, Item, Fetch, Key, Convert, Message>,
    tx: mpsc::Sender<Result<Msg, Status>>,
    method: &'static str,
) where
    K: Clone + Send + 'static,
    Item: Send + 'static,
    Elem: prost::Message + 'static,
    Fetch: Fn(Option<K>, u32) -> Fut,
    Fut: Future<Output = StoreResult<Fetched<Item>>> + Send + 'static,
    Key: Fn(&Item) -> K + Send + Sync + 'static,
    Convert: Fn(Item) -> Result<Elem, ApiError> + Send + Sync + 'static,
    Message: Fn(Vec<Elem>, Option<K>) -> Msg,
{
    let Admitted {
        permit: place,
        max_page_bytes,
        mut key,
    } = admitted;
    let max_pages = pager.max_pages;
    let (mut reader, message) = pager.into_reader(max_page_bytes);
    let mut sender = PageSender::new(tx, message, method, max_pages);
    let mut failure = None;
    loop {
        let page = match reader.next_page(sender.pages, sender.tx.closed()).await {
            Some(Ok(page)) => page,
            Some(Err(err)) => {
                failure = Some(err);
                break;
            }
            None => break,
        };
        if let Err(err) = key.check_if_due().await {
            let reason = err.reason().as_str();
            tracing::info!(reason, "stream ended by the check of its api key");
            failure = Some(err);
            break;
        }
        if sender.send(page).await.is_break() {
            break;
        }
    }
    // Where the stream's time went: waiting for the database and the rows'
    // conversion, cutting pages and building messages, waiting for the client.
    tracing::debug!(
        pages = sender.pages,
        items = sender.items,
        waited_db = ?reader.waited_db,
        building = ?(reader.cutting + sender.building),
        waited_client = ?sender.waited_client,
        "stream finished"
    );
    // The place is given back before the stream's end reaches the client (its
    // failure, or the close when `sender` goes): a client that has read a stream to
    // its end can open the next at once, even at a limit of one stream. The reader
    // goes first, with any read it started ahead.
    drop(reader);
    drop(place);
    if let Some(err) = failure {
        fail(&sender.tx, err).await;
    }
}

impl<K, Item, Fetch, Key, Convert, Message> Pager<K, Item, Fetch, Key, Convert, Message> {
    /// Splits the walk into the reader of its pages, with its first query (of one
    /// page, so the first page comes as fast as it can) started, and the builder of
    /// its messages.
    fn into_reader<Elem, Fut>(
        self,
        max_page_bytes: usize,
    ) -> (PageReader<K, Item, Elem, Fetch, Key, Convert>, Message)
    where
        K: Clone + Send + 'static,
        Item: Send + 'static,
        Elem: prost::Message + 'static,
        Fetch: Fn(Option<K>, u32) -> Fut,
        Fut: Future<Output = StoreResult<Fetched<Item>>> + Send + 'static,
        Key: Fn(&Item) -> K + Send + Sync + 'static,
        Convert: Fn(Item) -> Result<Elem, ApiError> + Send + Sync + 'static,
    {
        let mut reader = PageReader::new(
            self.fetch,
            self.key,
            self.convert,
            self.size,
            self.page_size,
            max_page_bytes,
            self.max_pages,
        );
        reader.start(self.after, 1);
        (reader, self.message)
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
    fn new(
        tx: mpsc::Sender<Result<Msg, Status>>,
        message: Message,
        method: &'static str,
        max_pages: Option<u32>,
    ) -> Self {
        Self {
            tx,
            message,
            method,
            max_pages,
            pages: 0,
            items: 0,
            building: Duration::ZERO,
            waited_client: Duration::ZERO,
        }
    }

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
pub(crate) async fn fail<Msg>(tx: &mpsc::Sender<Result<Msg, Status>>, err: ApiError) {
    let _ = tx.send(Err(Status::from(err))).await;
}
