//! ImportContacts: a batch of rows written in one transaction, with a result per
//! row. The rows of a batch are merged in row order exactly as single upserts would
//! be (`ContactUpsert::new_contact`, `Contact::apply`, the same timeline entries),
//! and then written with a constant number of statements: lock the batch's
//! existing contacts, insert the new ones, update the changed ones, insert the
//! timeline entries.
//!
//! Concurrent batches (of other imports, or single writes) cannot deadlock on each
//! other's rows: a batch locks its existing contacts in address-key order, then
//! inserts its new ones in that order too. If another transaction created one of
//! the batch's new addresses after the batch read them, the insert skips it (after
//! waiting for that transaction), and the batch is rolled back and run again: the
//! second time that contact is an existing one. A deadlock PostgreSQL still finds
//! (with a single write that locks a contact out of order) is retried the same way.

//! # Pipelined batches
//!
//! On a database that runs write transactions side by side (`write_concurrency`), an
//! import writes up to `--import-depth` batches at once, each in its own
//! transaction, with the promises of one batch at a time kept by `BatchOrder`:
//!
//! - *Commits in batch order.* A batch does its work, then waits for the batch before
//!   it to commit before it commits; if that one fails for good (or the import is
//!   dropped), it rolls back. So the committed batches of an import are always a
//!   prefix of it, and an acknowledged batch was never passed.
//! - *Row order across batches.* A batch that shares an address key with an earlier
//!   batch in flight starts only once that batch has committed (the caller passes
//!   it as `after`), so it reads that batch's result, exactly as one at a time.
//!
//! Why this cannot deadlock. Batches of one import in flight together have
//! disjoint keys, so none waits for another's rows; the only wait between them is
//! the commit order. That wait is made one the database sees: each attempt holds an
//! order lock of its own (`WriteTx::hold_order_lock`, an advisory transaction lock
//! on PostgreSQL), and the next batch waits for it to be released
//! (`await_order_lock`) before it looks at how the attempt ended. A cycle through
//! that wait and some other transaction's row locks (another import's batch holding
//! an address the earlier batch needs, and waiting for one the later batch holds)
//! is then in PostgreSQL's wait graph: its deadlock detector aborts one member, and
//! an aborted batch runs again as after a lost race. The waits the database does not
//! see hold no lock, or wait for no lock: a batch waiting before it starts holds
//! nothing, and a batch holding the earlier one's order lock waits only for the
//! earlier one to record how its ended transaction ended, which it does next. If the
//! earlier batch's attempt did not commit (it runs again), the later one rolls back
//! too and runs again once the earlier one has committed.
//!
//! - *New contacts' ids in row order.* A batch's new contacts take ids made when the
//!   batch is taken (`Batch::new`, which the import calls in batch order before the
//!   batch is written), not when it is written: ids are time-ordered ULIDs from one
//!   monotonic generator, so the contacts one import creates have ids that increase
//!   with row index whatever the depth, and a list in id order shows them in row
//!   order even when a later batch is written first.
//!
//! The change feed needs nothing more: its stamps are taken under each contact's
//! row lock (`store::common::changes`), and two batches of an import that touch one
//! contact never overlap (the later starts after the earlier's commit), so one
//! contact's changes still come in commit order.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::domain::{Contact, ContactId, ContactUpsert, TimelineEntry, contact_created};
use crate::store::{Access, Store, StoreError, StoreResult, WriteTx};

/// Most attempts at one batch before its error is returned: each retry follows a
/// race the previous attempt lost, which leaves the raced address existing.
const MAX_ATTEMPTS: u32 = 5;

/// How an import treats rows whose address the tenant has, or has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    /// Create new contacts, merge into existing ones.
    #[default]
    Upsert,
    /// Create new contacts; a row whose address exists fails with `Conflict`.
    CreateOnly,
    /// Merge into existing contacts; a row whose address does not fails with
    /// `NotFound`.
    UpdateOnly,
}

/// What happened to one row.
#[derive(Debug)]
pub enum RowOutcome {
    Created(ContactId),
    /// The contact's properties changed.
    Updated(ContactId),
    /// The contact existed and the row changed nothing.
    Unchanged(ContactId),
    /// The row was not written, for the reason a single upsert of it would fail.
    Failed(StoreError),
}

/// An import's batch: its rows, and the ids its new contacts take, made in one go
/// from the process's monotonic generator when the batch is taken (the import takes
/// its batches in order), one per row: row `i`, if it creates a contact, creates it
/// with `ids[i]`. A row that turns out to update an existing contact (or fails)
/// leaves its id unused, as does a row that a retry finds created by another writer.
/// Each id's time part is no earlier than `created_at`, which the new contacts take
/// as theirs, so the id-floor rule (an id is never earlier than its contact's
/// created_at, migrations/postgres/0009) holds however long the batch waits before
/// it is written.
#[derive(Debug)]
pub struct Batch {
    rows: Vec<ContactUpsert>,
    ids: Vec<ContactId>,
    created_at: DateTime<Utc>,
}

impl Batch {
    pub fn new(rows: Vec<ContactUpsert>) -> Self {
        let created_at = crate::domain::now();
        let ids = ContactId::generate_many_not_before(created_at, rows.len());
        Self {
            rows,
            ids,
            created_at,
        }
    }

    pub fn rows(&self) -> &[ContactUpsert] {
        &self.rows
    }
}

/// Writes `batch` for `access`'s tenant in one transaction and returns
/// an outcome per row, in row order. Rows that share an address are merged in row
/// order: the first may create the contact, the next ones update it. A row that
/// fails leaves the others alone; only the store failing fails the batch, and then
/// nothing of it is written. `order` places the batch in its import (see the
/// module's comment); `BatchOrder::alone()` for a batch written on its own.
pub async fn write_batch(
    store: &dyn Store,
    access: &Access,
    mode: ImportMode,
    batch: &Batch,
    order: &BatchOrder,
) -> StoreResult<Vec<RowOutcome>> {
    let mut attempt = 1;
    loop {
        order.before_start(attempt).await?;
        let err = match try_batch(store, access, mode, batch, order).await {
            Ok(Attempt::Committed(outcomes)) => {
                order.record(Stage::Committed);
                return Ok(outcomes);
            }
            Ok(Attempt::RaceLost) => {
                StoreError::internal("import batch kept losing races for new addresses")
            }
            Ok(Attempt::TurnLost) => {
                StoreError::internal("the import's previous batch kept being run again")
            }
            Err(err) if err.is_contention() => err,
            Err(err) => return Err(err),
        };
        // Before the next attempt takes anything: the next batch, if it waits for
        // this one's turn, rolls back.
        order.record(Stage::Retrying);
        if attempt >= MAX_ATTEMPTS {
            return Err(err);
        }
        tracing::debug!(
            attempt,
            "import batch raced another writer; running it again"
        );
        attempt += 1;
    }
}

/// How one attempt at a batch ended without an error.
enum Attempt {
    Committed(Vec<RowOutcome>),
    /// Another transaction created one of the batch's new addresses first.
    RaceLost,
    /// The previous batch's attempt ended without committing (it runs again).
    TurnLost,
}

/// Where a batch of a pipelined import stands, as the batches after it see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No attempt holds the batch's order lock yet.
    Starting,
    /// An attempt holds the order lock (writing, or waiting for its turn).
    Working,
    /// An attempt ended without committing; another follows.
    Retrying,
    Committed,
}

/// A batch as the later batches of its import see it: its order lock and its stage.
/// The stage's channel closes without `Committed` when the batch fails for good or
/// is dropped.
#[derive(Debug, Clone)]
pub struct BatchStage {
    key: u32,
    stage: watch::Receiver<Stage>,
}

impl BatchStage {
    /// Waits until the batch has committed; `false` if it never will.
    pub async fn committed(&self) -> bool {
        wait_for(&self.stage, |stage| stage == Stage::Committed).await == Some(Stage::Committed)
    }
}

/// A batch's place in its import's commit order (see the module's comment).
#[derive(Debug)]
pub struct BatchOrder {
    /// The order lock its attempts hold: `None` for a batch no other batch waits for.
    key: Option<u32>,
    stage: watch::Sender<Stage>,
    /// The batch before it, while that one was in flight.
    previous: Option<BatchStage>,
    /// An earlier batch in flight that writes one of its addresses.
    after: Option<BatchStage>,
}

impl BatchOrder {
    /// A batch written on its own: nothing before it, nothing waits for it.
    pub fn alone() -> Self {
        Self {
            key: None,
            stage: watch::Sender::new(Stage::Starting),
            previous: None,
            after: None,
        }
    }

    /// A batch of a pipelined import, with the batch before it still in flight
    /// (`previous`) and the latest earlier one in flight that shares an address
    /// with it (`after`); returns what the batches after it wait on.
    pub fn pipelined(
        previous: Option<BatchStage>,
        after: Option<BatchStage>,
    ) -> (Self, BatchStage) {
        let key = order_key();
        let (stage, seen) = watch::channel(Stage::Starting);
        let order = Self {
            key: Some(key),
            stage,
            previous,
            after,
        };
        (order, BatchStage { key, stage: seen })
    }

    fn record(&self, stage: Stage) {
        self.stage.send_replace(stage);
    }

    /// Waits, holding nothing, until attempt `attempt` may begin: after `after` has
    /// committed, and after the previous batch's order lock is held (a first
    /// attempt) or the previous batch has committed (a later one).
    async fn before_start(&self, attempt: u32) -> StoreResult<()> {
        if let Some(after) = &self.after
            && !after.committed().await
        {
            return Err(earlier_failed());
        }
        let Some(previous) = &self.previous else {
            return Ok(());
        };
        let ready = |stage: Stage| match attempt {
            1 => matches!(stage, Stage::Working | Stage::Committed),
            _ => stage == Stage::Committed,
        };
        match wait_for(&previous.stage, ready).await {
            Some(_) => Ok(()),
            None => Err(earlier_failed()),
        }
    }

    /// Takes this attempt's order lock, first thing in its transaction.
    async fn hold(&self, tx: &mut dyn WriteTx) -> StoreResult<()> {
        if let Some(key) = self.key {
            tx.hold_order_lock(key).await?;
            self.record(Stage::Working);
        }
        Ok(())
    }

    /// Waits, before this attempt commits, until the previous batch's transaction
    /// has ended; `false` when it ended without committing (this attempt then rolls
    /// back). An error when the previous batch failed for good.
    async fn turn(&self, tx: &mut dyn WriteTx) -> StoreResult<bool> {
        let Some(previous) = &self.previous else {
            return Ok(true);
        };
        if *previous.stage.borrow() == Stage::Committed {
            return Ok(true);
        }
        tx.await_order_lock(previous.key).await?;
        // Its transaction has ended; how it ended is recorded next, with nothing held.
        let ended = |stage: Stage| matches!(stage, Stage::Committed | Stage::Retrying);
        match wait_for(&previous.stage, ended).await {
            Some(stage) => Ok(stage == Stage::Committed),
            None => Err(earlier_failed()),
        }
    }
}

/// The stage once `ready` holds for it, or `None` if the batch ended first.
async fn wait_for(stage: &watch::Receiver<Stage>, ready: impl Fn(Stage) -> bool) -> Option<Stage> {
    let mut stage = stage.clone();
    let seen = stage.wait_for(|stage| ready(*stage)).await.ok()?;
    Some(*seen)
}

/// What a batch ends with when an earlier batch of its import failed: never sent
/// (the import ends with the earlier batch's error), only logged.
fn earlier_failed() -> StoreError {
    StoreError::internal("an earlier batch of the import failed")
}

/// A new order-lock key: unique among this process's batches in flight, and from a
/// random start, so that other processes' keys meet it rarely (a meeting costs a
/// wait, not correctness).
fn order_key() -> u32 {
    static BASE: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = *BASE.get_or_init(|| getrandom::u32().unwrap_or_else(|_| std::process::id()));
    base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A contact the batch writes or has found, and what the batch did to it.
struct Slot {
    contact: Contact,
    /// Created by this batch (to insert), else found existing (to update).
    new: bool,
    changed: bool,
}

/// One attempt at a batch: committed, or rolled back to run again.
async fn try_batch(
    store: &dyn Store,
    access: &Access,
    mode: ImportMode,
    batch: &Batch,
    order: &BatchOrder,
) -> StoreResult<Attempt> {
    let rows = batch.rows();
    let mut keys: Vec<String> = rows.iter().map(|row| row.email.key().to_owned()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut tx = store.begin_write(&access.tenant).await?;
    order.hold(tx.as_mut()).await?;
    let mut slots: HashMap<String, Slot> = tx
        .lock_contacts_by_email_keys(&keys)
        .await?
        .into_iter()
        .map(|contact| {
            let slot = Slot {
                contact,
                new: false,
                changed: false,
            };
            (slot.contact.email.key().to_owned(), slot)
        })
        .collect();
    let mut entries = Vec::new();
    let outcomes = rows
        .iter()
        .zip(&batch.ids)
        .map(|(row, id)| {
            let new = NewContact {
                id,
                at: batch.created_at,
            };
            apply_row(&mut slots, &mut entries, mode, row.clone(), new)
        })
        .collect();

    let mut new: Vec<&Contact> = Vec::new();
    let mut changed: Vec<&Contact> = Vec::new();
    for slot in slots.values() {
        match (slot.new, slot.changed) {
            (true, _) => new.push(&slot.contact),
            (false, true) => changed.push(&slot.contact),
            (false, false) => {}
        }
    }
    new.sort_unstable_by(|a, b| a.email.key().cmp(b.email.key()));
    let inserted = tx.insert_contacts_if_new(&new).await?;
    if inserted.len() != new.len() {
        return Ok(Attempt::RaceLost);
    }
    tx.update_contacts(&changed).await?;
    let entries: Vec<(&ContactId, &TimelineEntry)> =
        entries.iter().map(|(id, entry)| (id, entry)).collect();
    tx.insert_timeline_entries(&entries).await?;
    if !order.turn(tx.as_mut()).await? {
        return Ok(Attempt::TurnLost);
    }
    tx.commit().await?;
    Ok(Attempt::Committed(outcomes))
}

/// The id and creation time of the contact a row creates, if it creates one.
struct NewContact<'a> {
    id: &'a ContactId,
    at: DateTime<Utc>,
}

/// Applies one row to the batch's contacts, as a single upsert in `mode` would,
/// recording its timeline entry.
fn apply_row(
    slots: &mut HashMap<String, Slot>,
    entries: &mut Vec<(ContactId, TimelineEntry)>,
    mode: ImportMode,
    row: ContactUpsert,
    new: NewContact<'_>,
) -> RowOutcome {
    let slot = match slots.entry(row.email.key().to_owned()) {
        Entry::Vacant(vacant) => {
            if mode == ImportMode::UpdateOnly {
                return RowOutcome::Failed(StoreError::NotFound("contact"));
            }
            let contact = match row.new_contact_with_id(new.id.clone(), new.at) {
                Ok(contact) => contact,
                Err(invalid) => return RowOutcome::Failed(invalid.into()),
            };
            let id = contact.id.clone();
            entries.push((id.clone(), contact_created(&contact)));
            vacant.insert(Slot {
                contact,
                new: true,
                changed: true,
            });
            return RowOutcome::Created(id);
        }
        Entry::Occupied(occupied) => occupied.into_mut(),
    };
    // A contact this batch created is the import's own: a later row merges into it
    // in every mode.
    if mode == ImportMode::CreateOnly && !slot.new {
        return RowOutcome::Failed(StoreError::Conflict { field: "email" });
    }
    let id = slot.contact.id.clone();
    match slot.contact.apply(row.into_update()) {
        Err(invalid) => RowOutcome::Failed(invalid.into()),
        Ok(None) => RowOutcome::Unchanged(id),
        Ok(Some((after, entry))) => {
            entries.push((id.clone(), entry));
            slot.contact = after;
            slot.changed = true;
            RowOutcome::Updated(id)
        }
    }
}
