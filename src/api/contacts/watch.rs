//! WatchContacts: the tenant's change feed as a server stream. The backlog after
//! the resume position first, then new changes as they commit; the stream reads the
//! outbox in batches (`ChangeStore::read_changes`), wakes when the tenant's bell
//! rings (a commit here, or a NOTIFY from another replica) and otherwise polls
//! slowly, so a lost wake-up only delays a change. It only reads: a slow client
//! holds a bounded channel of changes and at most two batches (the one being sent
//! and the one read ahead), each bounded in bytes (`READ_BYTES`), and no writer
//! waits for it. A backlog is read in batches sized to those bytes, so a replay of
//! small changes costs one statement per many of them.
//!
//! Each change is encoded as ListContacts' pages are (`api::wire`: the stored JSON
//! transcoded straight into the `Struct`'s bytes), and the changes of a batch go
//! through the channel in chunks, so a backlog's replay costs one send and one
//! wake-up per chunk rather than per change.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_core::Stream;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use super::ContactsApi;
use crate::api::cursors::ListCursors;
use crate::api::stream::{Watcher, fail};
use crate::api::{ApiError, Credentials, convert, handle_stream, pb, wire};
use crate::domain::{
    ChangeKind, ChangePosition, ChangeRecord, CursorKind, TenantId, ValidationError, WatchStart,
};
use crate::store::{ChangeBatch, DynStore, SharedBatch, StoreError};

/// What the feed's task hands the stream: a chunk of changes, in order, or the
/// status that ends the stream.
type Chunk = Result<Vec<wire::ContactChange>, Status>;

/// WatchContacts' stream: the chunks the feed sends, handed to tonic one change at a
/// time (tonic packs the ones that are ready into one HTTP/2 write).
pub struct WatchStream {
    rx: mpsc::Receiver<Chunk>,
    chunk: std::vec::IntoIter<wire::ContactChange>,
}

impl Stream for WatchStream {
    type Item = Result<wire::ContactChange, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.chunk.next() {
                return Poll::Ready(Some(Ok(change)));
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some(Ok(chunk)) => this.chunk = chunk.into_iter(),
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// Changes a watch's first read of the outbox takes at most, and a read after a
/// batch that did not fill up (the reads that watchers waiting at one position
/// share).
const BATCH: u32 = 100;
/// The row limit of a read-ahead, set from the bytes per change of the batch before
/// it so the read comes near `READ_BYTES` (a backlog of small changes costs one
/// statement per many), stays within these. The bytes, not this, bound what a read
/// holds: the upper limit bounds the rows PostgreSQL sends past a read cut short.
const MIN_BATCH: u32 = 4;
const MAX_BATCH: u32 = 1000;
/// Where one read of the outbox stops, in bytes as `change_record_bytes` counts
/// them: a batch holds at most this plus one change, whatever its row limit. A
/// watch holds the batch it sends and at most one read ahead (each with its
/// encoding), plus `BUFFER` chunks.
const READ_BYTES: usize = 512 << 10;
/// A chunk is sent once its changes take this many bytes encoded (or at the end of
/// its batch), so a chunk of large contacts holds this plus one change at most.
const CHUNK_BYTES: usize = 64 << 10;
/// Chunks waiting for a slow client, beyond the one it is reading and the batch
/// being sent.
const BUFFER: usize = 2;
/// How long a watcher waits for a wake-up before it reads again anyway.
const POLL: Duration = Duration::from_secs(1);
/// How soon it reads again while committed changes wait above the horizon.
const HELD_BACK_POLL: Duration = Duration::from_millis(50);

pub(super) async fn watch_contacts(
    api: &ContactsApi,
    request: Request<pb::WatchContactsRequest>,
) -> Result<Response<WatchStream>, Status> {
    let (metadata, extensions, message) = request.into_parts();
    let credentials = Credentials::new(&metadata, &extensions);
    handle_stream(
        &api.auth,
        "WatchContacts",
        &credentials,
        |access| async move {
            let tenant = access.tenant.clone();
            let kinds = parse_types(&message.types)?;
            let max_changes = match message.max_changes {
                0 => None,
                n if n > 0 => Some(n as u64),
                _ => {
                    let why = "must not be negative";
                    return Err(ValidationError::new("max_changes", why).into());
                }
            };
            let start = match pb::WatchStart::try_from(message.start) {
                Ok(pb::WatchStart::Unspecified | pb::WatchStart::Now) => WatchStart::Now,
                Ok(pb::WatchStart::OldestRetained) => WatchStart::OldestRetained,
                Err(_) => {
                    let why = "is not a known WatchStart";
                    return Err(ValidationError::new("start", why).into());
                }
            };
            let tokens = ListCursors::new(&api.cursor_key, &tenant, CursorKind::Changes, &[]);
            let resume = tokens
                .resume(&message.resume_token)
                .map_err(|err| ValidationError::new("resume_token", err.description))?
                .as_deref()
                .map(ChangePosition::decode)
                .transpose()?;
            let watcher = api.streams.admit_watcher(access)?;
            let from = match resume {
                Some(position) => {
                    // Refused now, as the call's status, when it is already too old.
                    let status = api
                        .store
                        .read_changes(&tenant, position, &[], 0, READ_BYTES)
                        .await?;
                    check_retained(position, status.purged)?;
                    position
                }
                None => api.store.change_start(&tenant, start).await?,
            };
            let (tx, rx) = mpsc::channel::<Chunk>(BUFFER);
            let feed = Feed {
                store: api.store.clone(),
                tenant,
                kinds,
                tokens,
                position: from,
                left: max_changes,
                follow_purge: resume.is_none() && start == WatchStart::OldestRetained,
            };
            let span = tracing::Span::current();
            tokio::spawn(tracing::Instrument::instrument(feed.run(watcher, tx), span));
            Ok(WatchStream {
                rx,
                chunk: Vec::new().into_iter(),
            })
        },
    )
    .await
}

fn parse_types(types: &[i32]) -> Result<Vec<ChangeKind>, ValidationError> {
    let mut kinds = Vec::new();
    for &raw in types {
        let kind = match pb::ContactChangeType::try_from(raw) {
            Ok(pb::ContactChangeType::Created) => ChangeKind::Created,
            Ok(pb::ContactChangeType::Updated) => ChangeKind::Updated,
            Ok(pb::ContactChangeType::Deleted) => ChangeKind::Deleted,
            Ok(pb::ContactChangeType::Suppressed) => ChangeKind::Suppressed,
            Ok(pb::ContactChangeType::Unsubscribed) => ChangeKind::Unsubscribed,
            Ok(pb::ContactChangeType::Unspecified) | Err(_) => {
                let why = "holds a value that is not a known ContactChangeType";
                return Err(ValidationError::new("types", why));
            }
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// RESUME_TOKEN_EXPIRED when changes after `position` were purged.
fn check_retained(
    position: ChangePosition,
    purged: Option<ChangePosition>,
) -> Result<(), StoreError> {
    match purged {
        Some(purged) if purged > position => Err(StoreError::ResumeTokenExpired),
        _ => Ok(()),
    }
}

/// One watch's walk along its tenant's feed.
struct Feed {
    store: DynStore,
    tenant: TenantId,
    kinds: Vec<ChangeKind>,
    tokens: ListCursors,
    /// The position of the last change sent (or the start).
    position: ChangePosition,
    /// Changes still to send; `None` until the client cancels.
    left: Option<u64>,
    /// Started from the oldest retained change and sent nothing yet: a purge that
    /// passes the start moves it (the client holds no token it could have missed).
    follow_purge: bool,
}

impl Feed {
    /// Walks the feed, then gives the watch's place back before the stream's end
    /// reaches the client (when `tx` goes): a client that has read a watch to its
    /// `max_changes` can open the next at once, even at a limit of one watcher.
    async fn run(self, mut watcher: Watcher, tx: mpsc::Sender<Chunk>) {
        self.walk(&mut watcher, &tx).await;
        drop(watcher);
        drop(tx);
    }

    /// Sends changes until the client goes away, `max_changes` are sent, or
    /// something fails (the database, a revoked key, an expired position).
    async fn walk(mut self, watcher: &mut Watcher, tx: &mpsc::Sender<Chunk>) {
        let mut rings = self.store.change_bell().subscribe(&self.tenant);
        let mut ahead: Option<ReadAhead> = None;
        loop {
            let limit = ahead.as_ref().map_or(BATCH, |ahead| ahead.limit);
            let batch = match self.next_batch(&mut rings, ahead.take()).await {
                Ok(batch) => batch,
                Err(err) => return fail(tx, err.into()).await,
            };
            if let Err(err) = check_retained(self.position, batch.purged) {
                if let (true, Some(purged)) = (self.follow_purge, batch.purged) {
                    self.position = purged;
                    continue;
                }
                return fail(tx, err.into()).await;
            }
            // More may follow at once: the next batch is read while this one is sent
            // (a backlog's replay overlaps the database's work with the server's).
            let full = batch.cut_short || batch.changes.len() >= limit as usize;
            let sent = batch.changes.len() as u64;
            let wanted = self.left.map(|left| left.saturating_sub(sent));
            if let (true, Some(last)) = (full, batch.changes.last())
                && wanted != Some(0)
            {
                rings.borrow_and_update();
                let limit = next_limit(&batch.changes, wanted);
                ahead = Some(ReadAhead::start(&self, last.position, limit));
            }
            if !self.send_batch(watcher, tx, &batch).await {
                return;
            }
            if full {
                continue;
            }
            let wait = if batch.held_back {
                HELD_BACK_POLL
            } else {
                POLL
            };
            tokio::select! {
                _ = rings.changed() => {}
                () = tokio::time::sleep(wait) => {}
                () = tx.closed() => return,
            }
        }
    }

    /// The batch read ahead if there is one, else the batch after this watch's
    /// position read now: shared with this process's watchers that read the same
    /// now, or alone when the shared read failed (for this watch's own error).
    async fn next_batch(
        &self,
        rings: &mut watch::Receiver<u64>,
        ahead: Option<ReadAhead>,
    ) -> Result<Arc<ChangeBatch>, StoreError> {
        if let Some(ahead) = ahead {
            return ahead.batch().await.map(Arc::new);
        }
        // Seen before the read: a ring during it wakes the wait after the batch.
        let seen = *rings.borrow_and_update();
        let now = *rings.borrow();
        if let Some(batch) = self.shared_read(seen, now).await {
            return Ok(batch);
        }
        self.store
            .read_changes(&self.tenant, self.position, &self.kinds, BATCH, READ_BYTES)
            .await
            .map(Arc::new)
    }

    /// Sends `batch`'s changes in chunks of about `CHUNK_BYTES`, the caller's key
    /// checked before each chunk; false when the watch ends (the client went away,
    /// `max_changes` were sent, or a failure was sent).
    async fn send_batch(
        &mut self,
        watcher: &mut Watcher,
        tx: &mpsc::Sender<Chunk>,
        batch: &ChangeBatch,
    ) -> bool {
        let own;
        let encoded = match shared_messages(batch) {
            Some(shared) => shared,
            None => {
                own = BatchMessages::of(&batch.changes, &self.tokens);
                &own
            }
        };
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        for (i, change) in batch.changes.iter().enumerate() {
            if chunk.is_empty()
                && let Err(err) = watcher.check_key().await
            {
                fail(tx, err).await;
                return false;
            }
            // Past the encoded ones: the change that failed, encoded again for its error.
            let message = match encoded
                .0
                .get(i)
                .cloned()
                .map_or_else(|| self.message(change), Ok)
            {
                Ok(message) => message,
                Err(err) => {
                    // What was encoded before it still goes out, then the error.
                    if self.send(tx, chunk).await {
                        fail(tx, err).await;
                    }
                    return false;
                }
            };
            chunk_bytes += message.encoded_len();
            chunk.push((change.position, message));
            let done = self.left.as_mut().is_some_and(|left| {
                *left -= 1;
                *left == 0
            });
            if done || chunk_bytes >= CHUNK_BYTES {
                if !self.send(tx, std::mem::take(&mut chunk)).await || done {
                    return false;
                }
                chunk_bytes = 0;
            }
        }
        self.send(tx, chunk).await
    }

    /// The batch after this watch's position, shared with the watchers of this
    /// process that read the same now (`SharedReads`).
    async fn shared_read(&self, seen: u64, now: u64) -> SharedBatch {
        let key = (
            self.tenant.clone(),
            self.position,
            self.kinds.clone(),
            BATCH,
        );
        let (store, tenant, position, kinds, tokens) = (
            self.store.clone(),
            self.tenant.clone(),
            self.position,
            self.kinds.clone(),
            self.tokens.clone(),
        );
        let bell = self.store.change_bell();
        bell.shared_reads()
            .read(key, seen, now, move || {
                Box::pin(async move {
                    let batch = store
                        .read_changes(&tenant, position, &kinds, BATCH, READ_BYTES)
                        .await?;
                    Ok(BatchMessages::attach(batch, &tokens))
                })
            })
            .await
    }

    /// Sends a chunk (of the changes read and their positions), and moves this
    /// watch's position past it; false when the client has gone.
    async fn send(
        &mut self,
        tx: &mpsc::Sender<Chunk>,
        chunk: Vec<(ChangePosition, wire::ContactChange)>,
    ) -> bool {
        let Some(&(last, _)) = chunk.last() else {
            return true;
        };
        let count = chunk.len() as u64;
        let messages = chunk.into_iter().map(|(_, message)| message).collect();
        if tx.send(Ok(messages)).await.is_err() {
            return false;
        }
        crate::metrics::record_stream_messages("WatchContacts", count);
        self.position = last;
        self.follow_purge = false;
        true
    }

    fn message(&self, change: &ChangeRecord) -> Result<wire::ContactChange, ApiError> {
        Ok(wire::ContactChange::new(&change_fields(
            change,
            &self.tokens,
        )?))
    }
}

/// The messages of a batch's changes, in order, up to the first that failed to
/// encode. Made once per read: a change's message is the same for every watcher of
/// the tenant (its token is signed for the tenant, not the watcher), so the watchers
/// that share a read share its messages too.
#[derive(Default)]
struct BatchMessages(Vec<wire::ContactChange>);

impl BatchMessages {
    fn of(changes: &[ChangeRecord], tokens: &ListCursors) -> Self {
        // The stored JSON's size, plus room for each change's other fields.
        let capacity = text_bytes(changes) + changes.len() * 256;
        let fields = changes
            .iter()
            .map_while(|change| change_fields(change, tokens).ok());
        Self(wire::ContactChange::encode_all(fields, capacity))
    }

    /// `batch` with its messages.
    fn attach(mut batch: ChangeBatch, tokens: &ListCursors) -> ChangeBatch {
        batch.encoded = Some(Box::new(Self::of(&batch.changes, tokens)));
        batch
    }
}

/// The messages whoever read `batch` made of it, if any.
fn shared_messages(batch: &ChangeBatch) -> Option<&BatchMessages> {
    batch.encoded.as_ref()?.downcast_ref::<BatchMessages>()
}

/// The stream's message of a change: the contact's stored JSON goes straight to the
/// wire, as ListContacts' contacts do.
#[cfg(test)]
fn change_message(change: &ChangeRecord, token: String) -> Result<wire::ContactChange, ApiError> {
    Ok(wire::ContactChange::new(&fields_with_token(change, token)?))
}

fn change_fields(
    change: &ChangeRecord,
    tokens: &ListCursors,
) -> Result<wire::ContactChangeFields, ApiError> {
    fields_with_token(change, tokens.next(Some(change.position.encode())))
}

fn fields_with_token(
    change: &ChangeRecord,
    token: String,
) -> Result<wire::ContactChangeFields, ApiError> {
    let contact = change
        .contact
        .as_ref()
        .map(convert::contact_view_ref)
        .transpose()?;
    Ok(wire::ContactChangeFields {
        token,
        r#type: change_type(change.kind) as i32,
        contact_id: change.contact_id.as_str().to_owned(),
        contact,
        changed_fields: change.changed_fields.clone(),
        occurred_at: Some(convert::timestamp(change.occurred_at)),
    })
}

fn change_type(kind: ChangeKind) -> pb::ContactChangeType {
    match kind {
        ChangeKind::Created => pb::ContactChangeType::Created,
        ChangeKind::Updated => pb::ContactChangeType::Updated,
        ChangeKind::Deleted => pb::ContactChangeType::Deleted,
        ChangeKind::Suppressed => pb::ContactChangeType::Suppressed,
        ChangeKind::Unsubscribed => pb::ContactChangeType::Unsubscribed,
    }
}

/// The text the changes' contacts carry: what a batch holds in memory, roughly.
fn text_bytes(changes: &[ChangeRecord]) -> usize {
    changes
        .iter()
        .filter_map(|change| change.contact.as_ref())
        .map(|contact| contact.properties.as_str().len() + contact.email.as_str().len())
        .sum()
}

mod read_ahead;
use read_ahead::{ReadAhead, next_limit};

#[cfg(test)]
mod tests;
