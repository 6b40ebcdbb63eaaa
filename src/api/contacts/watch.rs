//! WatchContacts: the tenant's change feed as a server stream. The backlog after
//! the resume position first, then new changes as they commit; the stream reads the
//! outbox in batches (`ChangeStore::read_changes`), wakes when the tenant's bell
//! rings (a commit here, or a NOTIFY from another replica) and otherwise polls
//! slowly, so a lost wake-up only delays a change. It only reads: a slow client
//! holds a bounded channel of changes and one batch, and no writer waits for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::ContactsApi;
use crate::api::cursors::ListCursors;
use crate::api::stream::{Watcher, fail};
use crate::api::{ApiError, Credentials, convert, handle_stream, pb};
use crate::domain::{
    ChangeKind, ChangePosition, ChangeRecord, CursorKind, Etag, TenantId, ValidationError,
    WatchStart,
};
use crate::store::{ChangeBatch, DynStore, SharedBatch, StoreError};

pub type WatchStream = ReceiverStream<Result<pb::ContactChange, Status>>;

/// Changes one read of the outbox takes at most.
const BATCH: u32 = 100;
/// Changes waiting for a slow client, beyond the batch being sent.
const BUFFER: usize = 16;
/// How long a watcher waits for a wake-up before it reads again anyway.
const POLL: Duration = Duration::from_secs(1);
/// How soon it reads again while committed changes wait above the horizon.
const HELD_BACK_POLL: Duration = Duration::from_millis(50);
/// A full batch whose contacts' text stays under this has the next one read while it
/// is sent (a backlog's replay overlaps the database's work with the server's); a
/// batch of large contacts does not, so a slow client still holds one batch.
const READ_AHEAD_BYTES: usize = 1 << 20;

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
                    let status = api.store.read_changes(&tenant, position, &[], 0).await?;
                    check_retained(position, status.purged)?;
                    position
                }
                None => api.store.change_start(&tenant, start).await?,
            };
            let (tx, rx) = mpsc::channel(BUFFER);
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
            Ok(ReceiverStream::new(rx))
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
    /// Sends changes until the client goes away, `max_changes` are sent, or
    /// something fails (the database, a revoked key, an expired position); holds
    /// the watch's place until then.
    async fn run(
        mut self,
        mut watcher: Watcher,
        tx: mpsc::Sender<Result<pb::ContactChange, Status>>,
    ) {
        let mut rings = self.store.change_bell().subscribe(&self.tenant);
        let mut ahead: Option<ReadAhead> = None;
        loop {
            let read = match ahead.take() {
                Some(ahead) => ahead.batch().await.map(Arc::new),
                None => {
                    // Seen before the read: a ring during it wakes the wait below.
                    let seen = *rings.borrow_and_update();
                    let now = *rings.borrow();
                    match self.shared_read(seen, now).await {
                        Some(batch) => Ok(batch),
                        // Alone, for this watch's own error (or a success after all).
                        None => self
                            .store
                            .read_changes(&self.tenant, self.position, &self.kinds, BATCH)
                            .await
                            .map(Arc::new),
                    }
                }
            };
            let batch = match read {
                Ok(batch) => batch,
                Err(err) => return fail(&tx, err.into()).await,
            };
            if let Err(err) = check_retained(self.position, batch.purged) {
                if let (true, Some(purged)) = (self.follow_purge, batch.purged) {
                    self.position = purged;
                    continue;
                }
                return fail(&tx, err.into()).await;
            }
            let full = batch.changes.len() == BATCH as usize;
            let more_wanted = self.left.is_none_or(|left| left > u64::from(BATCH));
            if let (true, true, Some(last)) = (full, more_wanted, batch.changes.last())
                && text_bytes(&batch.changes) <= READ_AHEAD_BYTES
            {
                rings.borrow_and_update();
                ahead = Some(ReadAhead::start(&self, last.position));
            }
            for change in batch.changes.iter().cloned() {
                if let Err(err) = watcher.check_key().await {
                    return fail(&tx, err).await;
                }
                let position = change.position;
                let message = match self.message(change) {
                    Ok(message) => message,
                    Err(err) => return fail(&tx, err).await,
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
                crate::metrics::record_stream_message("WatchContacts");
                self.position = position;
                self.follow_purge = false;
                if let Some(left) = self.left.as_mut() {
                    *left -= 1;
                    if *left == 0 {
                        return;
                    }
                }
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

    /// The batch after this watch's position, shared with the watchers of this
    /// process that read the same now (`SharedReads`).
    async fn shared_read(&self, seen: u64, now: u64) -> SharedBatch {
        let key = (
            self.tenant.clone(),
            self.position,
            self.kinds.clone(),
            BATCH,
        );
        let (store, tenant, position, kinds) = (
            self.store.clone(),
            self.tenant.clone(),
            self.position,
            self.kinds.clone(),
        );
        let bell = self.store.change_bell();
        bell.shared_reads()
            .read(key, seen, now, move || {
                Box::pin(async move { store.read_changes(&tenant, position, &kinds, BATCH).await })
            })
            .await
    }

    fn message(&self, change: ChangeRecord) -> Result<pb::ContactChange, ApiError> {
        let kind = match change.kind {
            ChangeKind::Created => pb::ContactChangeType::Created,
            ChangeKind::Updated => pb::ContactChangeType::Updated,
            ChangeKind::Deleted => pb::ContactChangeType::Deleted,
            ChangeKind::Suppressed => pb::ContactChangeType::Suppressed,
            ChangeKind::Unsubscribed => pb::ContactChangeType::Unsubscribed,
        };
        let contact = match change.contact {
            None => None,
            Some(view) => {
                let properties: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(view.properties.as_str()).map_err(StoreError::internal)?;
                Some(pb::Contact {
                    properties: Some(convert::to_struct(properties)),
                    id: view.id.into_string(),
                    email: view.email.into_string(),
                    suppressed: view.suppressed,
                    unsubscribed: view.unsubscribed,
                    created_at: Some(convert::timestamp(view.created_at)),
                    updated_at: Some(convert::timestamp(view.updated_at)),
                    etag: Etag::of(view.revision),
                })
            }
        };
        Ok(pb::ContactChange {
            token: self.tokens.next(Some(change.position.encode())),
            r#type: kind as i32,
            contact_id: change.contact_id.into_string(),
            contact,
            changed_fields: change.changed_fields,
            occurred_at: Some(convert::timestamp(change.occurred_at)),
        })
    }
}

/// The next batch, read while the current one is sent; aborted when the watch ends
/// first.
struct ReadAhead(tokio::task::JoinHandle<Result<ChangeBatch, StoreError>>);

impl ReadAhead {
    fn start(feed: &Feed, after: ChangePosition) -> Self {
        let (store, tenant, kinds) = (feed.store.clone(), feed.tenant.clone(), feed.kinds.clone());
        Self(tokio::spawn(async move {
            store.read_changes(&tenant, after, &kinds, BATCH).await
        }))
    }

    async fn batch(mut self) -> Result<ChangeBatch, StoreError> {
        (&mut self.0).await.map_err(StoreError::internal)?
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.0.abort();
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
