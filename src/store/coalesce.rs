//! Writes coalesced across concurrent calls: CreateContact on either backend, and
//! UpdateContact's compare-and-set on SQLite. At most `slots` batches in flight
//! (`--db-write-batches`; 0 sends every write alone), and `spare` more while those
//! wait longer than `PATIENCE`. How a batch is written is the backend's
//! (`BatchWriter`): one statement on PostgreSQL (`postgres/writes.rs`), one
//! transaction of batch statements on SQLite (`sqlite/writes.rs`). What is here is
//! the rule of who shares a batch and what each call is answered.
//!
//! A write that finds a slot free and nothing queued goes at once, alone, on its
//! caller's task: an idle server adds no latency. Writes that arrive while the slots
//! are taken queue, one line per caller (tenant and key), and the next free slot
//! writes a line's queue as one batch, so one commit and one key check serve them
//! all. A batch stuck on a lock holds its own callers only: past `PATIENCE` a spare
//! slot, where the backend has one, carries the next line's.
//!
//! Every call still gets its own answer, whether its write was made:
//! - a write whose condition fails (a create's address is taken, in the table or by a
//!   concurrent insert that commits; an update's row has moved past its revision)
//!   writes nothing for its row and is answered `false`; of two writes of one batch
//!   with the same claim (`QueuedRow::claim`: an address, a contact), the first goes
//!   in the batch and the other alone after it, so its condition is tested against
//!   what the first left (an update behind one whose revision was stale may still
//!   be current);
//! - a revoked key: the batch is that key's calls only, all rejected;
//! - any other failure of the batch (a value the database refuses, an address taken
//!   by an update, a deadlock) sends every call alone, so one bad write cannot fail
//!   the others. An unreachable database is everyone's answer
//!   (`BatchWriter::everyones`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{AcquireError, Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::lines::Lines;
use super::{Access, StoreError, StoreResult};
use crate::domain::TenantId;

/// Most writes in one batch.
const MAX_BATCH: usize = 64;

/// How long queued writes wait for a batch in flight before a spare slot carries
/// them: several times what a full batch takes (BENCHMARKS.md, "Coalesced creates on
/// by default"), so a batch in flight this long is waiting (on a lock: another
/// transaction's insert of the same address, or its tenant's row), and must not
/// hold every tenant's writes behind it.
const PATIENCE: Duration = Duration::from_millis(50);

/// Most writes waiting at once, and most of one line's: past them a write is
/// refused at once (`Overloaded`), so the queue's memory is bounded and one caller's
/// flood cannot fill it for everyone.
const MAX_WAITING: usize = 4096;
const MAX_WAITING_PER_LINE: usize = 512;

/// A write as a backend makes it.
pub(crate) trait QueuedRow: Send + Sync + 'static {
    /// The contact's id.
    fn id(&self) -> &str;
    /// What two writes of one batch cannot share: a create's address key, an
    /// update's contact id.
    fn claim(&self) -> &str;
}

/// Whether the write was made (`false`: its condition failed).
pub(crate) type Written = StoreResult<bool>;

/// How a backend writes queued rows.
#[async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    type Row: QueuedRow;

    /// One write, with its entry and change, if `key_hash` (when given) is a live
    /// key of `tenant` (else `KeyRejected`).
    async fn write_one(
        &self,
        tenant: &TenantId,
        key_hash: Option<&[u8; 32]>,
        row: &Self::Row,
    ) -> Written;

    /// `rows` (distinct claims, in id order) in one batch for the line's key: the
    /// ids of the contacts it wrote, or `KeyRejected`.
    async fn write_many(&self, line: &Line, rows: &[Self::Row]) -> StoreResult<HashSet<String>>;

    /// Whether every write of a failed batch would get `err` going alone.
    fn everyones(&self, err: &StoreError) -> bool {
        matches!(err, StoreError::Unavailable(_) | StoreError::KeyRejected)
    }
}

/// Whose writes may share a batch: one key's, which the batch checks once (none for
/// writes whose key was checked already, as an update's by its read).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Line {
    pub tenant: TenantId,
    pub key_hash: Option<[u8; 32]>,
}

/// A slot of `main`, or, once `patience` has passed without one, of `spare`: queued
/// work waits its turn behind the batches in flight, which makes its batches large,
/// but one batch that is slow (a cold page, a lock) holds back no more than its own
/// callers.
pub(crate) async fn slot_or_spare(
    main: &Arc<Semaphore>,
    spare: &Arc<Semaphore>,
    patience: Duration,
) -> Result<OwnedSemaphorePermit, AcquireError> {
    tokio::select! {
        biased;
        slot = main.clone().acquire_owned() => slot,
        slot = async {
            tokio::time::sleep(patience).await;
            spare.clone().acquire_owned().await
        } => slot,
    }
}

type Reply = oneshot::Sender<Written>;

struct Job<R> {
    row: R,
    reply: Reply,
    /// Set once, by whichever comes first: a batch taking the job (`TAKEN`), or its
    /// caller giving up waiting (`WITHDRAWN`). So a caller answered UNAVAILABLE for
    /// waiting too long wrote nothing.
    state: Arc<AtomicU8>,
}

const WAITING: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

fn settle(state: &AtomicU8, to: u8) -> bool {
    state
        .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Writes waiting for a batch, one line per caller.
type Waiting<R> = Lines<Line, Job<R>>;

/// Whether a queued write's caller still waits, and if so, takes the job for a batch:
/// a caller that went away before its batch was sent wrote nothing, as a call
/// cancelled before its statement would not have.
fn take<R>(job: &Job<R>) -> bool {
    !job.reply.is_closed() && settle(&job.state, TAKEN)
}

struct Shared<R> {
    waiting: Mutex<Waiting<R>>,
    /// The batches normally in flight, and lone writes run by their callers.
    slots: Arc<Semaphore>,
    /// More, for a batch whose wait for `slots` passed `PATIENCE`.
    spare: Arc<Semaphore>,
    work: Notify,
    stopped: AtomicBool,
    batches: AtomicU64,
    writes: AtomicU64,
}

impl<R> Shared<R> {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting<R>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A slot, for a write that finds one free and nothing waiting.
    fn alone(&self) -> Option<OwnedSemaphorePermit> {
        let waiting = self.waiting();
        if waiting.len() > 0 {
            return None;
        }
        let slot = self.slots.clone().try_acquire_owned().ok();
        drop(waiting);
        slot
    }
}

/// The queue of writes; its worker ends when this is dropped.
pub(crate) struct Coalesced<W: BatchWriter> {
    shared: Arc<Shared<W::Row>>,
    writer: Arc<W>,
    /// No queue: every write goes alone (`--db-write-batches 0`).
    direct: bool,
    /// Longest a queued write waits for its batch to start (`--db-acquire-timeout`).
    wait_limit: Duration,
}

impl<W: BatchWriter> Coalesced<W> {
    /// At most `slots` batches in flight, and `spare` more while those are slow;
    /// with no slots, every write goes alone. A queued write waits at most
    /// `wait_limit` for its batch to start, then fails UNAVAILABLE, as a call that
    /// finds no connection does.
    pub fn start(writer: W, slots: usize, spare: usize, wait_limit: Duration) -> Self {
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Lines::new(MAX_WAITING, MAX_WAITING_PER_LINE, MAX_BATCH)),
            slots: Arc::new(Semaphore::new(slots)),
            spare: Arc::new(Semaphore::new(spare)),
            work: Notify::new(),
            stopped: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        });
        let writer = Arc::new(writer);
        if slots > 0 {
            tokio::spawn(run(writer.clone(), shared.clone()));
        }
        Self {
            shared,
            writer,
            direct: slots == 0,
            wait_limit,
        }
    }

    /// Batches written for queued writes, and the writes they carried, so far.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.shared.batches.load(Ordering::Relaxed),
            self.shared.writes.load(Ordering::Relaxed),
        )
    }

    /// `ContactStore::insert_contact` through the queue: `Conflict` on `email` when
    /// the address is taken. Trusted callers (no key) are rare: they go alone.
    pub async fn insert(&self, access: &Access, row: W::Row) -> StoreResult<()> {
        let written = match &access.key_hash {
            Some(key_hash) => self.write(&access.tenant, Some(key_hash), row).await?,
            None => self.writer.write_one(&access.tenant, None, &row).await?,
        };
        if !written {
            return Err(StoreError::Conflict { field: "email" });
        }
        Ok(())
    }

    /// Makes the write if `key_hash` (when given) is a live key of `tenant` (else
    /// `KeyRejected`); whether its condition held.
    pub async fn write(
        &self,
        tenant: &TenantId,
        key_hash: Option<&[u8; 32]>,
        row: W::Row,
    ) -> Written {
        if self.direct {
            return self.writer.write_one(tenant, key_hash, &row).await;
        }
        // Alone, it runs on its caller's task holding a slot: queueing it would cost
        // hand-offs and wake-ups for nothing to share. Writes that arrive meanwhile
        // queue behind that slot as they would behind a batch.
        if let Some(slot) = self.shared.alone() {
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
            self.shared.writes.fetch_add(1, Ordering::Relaxed);
            let written = self.writer.write_one(tenant, key_hash, &row).await;
            drop(slot);
            return written;
        }
        let line = Line {
            tenant: tenant.clone(),
            key_hash: key_hash.copied(),
        };
        let (reply, mut answer) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(WAITING));
        let job = Job {
            row,
            reply,
            state: state.clone(),
        };
        if self.shared.waiting().push(line, job).is_err() {
            return Err(StoreError::Overloaded("writes"));
        }
        self.shared.work.notify_one();
        let failed = |_| Err(StoreError::internal("a write batch failed to answer"));
        // Waiting for a batch to start is waiting for a connection: bounded alike.
        match tokio::time::timeout(self.wait_limit, &mut answer).await {
            Ok(answered) => answered.unwrap_or_else(failed),
            Err(_) if settle(&state, WITHDRAWN) => {
                Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))
            }
            // Taken just now: its batch answers.
            Err(_) => answer.await.unwrap_or_else(failed),
        }
    }
}

impl<W: BatchWriter> Drop for Coalesced<W> {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.shared.work.notify_one();
    }
}

async fn run<W: BatchWriter>(writer: Arc<W>, shared: Arc<Shared<W::Row>>) {
    loop {
        while shared.waiting().len() == 0 {
            if shared.stopped.load(Ordering::Relaxed) {
                return;
            }
            shared.work.notified().await;
        }
        // Whatever queues while this waits for a slot joins the next batch.
        let Ok(slot) = slot_or_spare(&shared.slots, &shared.spare, PATIENCE).await else {
            return;
        };
        let Some((line, batch)) = shared.waiting().next_batch(take) else {
            continue;
        };
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let writer = writer.clone();
        tokio::spawn(async move {
            write_batch(writer.as_ref(), &line, batch).await;
            drop(slot);
        });
    }
}

async fn write_batch<W: BatchWriter>(writer: &W, line: &Line, jobs: Vec<Job<W::Row>>) {
    let (sent, held) = split(jobs);
    let (rows, mut replies): (Vec<W::Row>, Vec<Reply>) =
        sent.into_iter().map(|job| (job.row, job.reply)).unzip();
    if rows.len() == 1 && held.is_empty() {
        // A caller that goes away takes its write with it, as before the queue.
        let written = tokio::select! {
            written = writer.write_one(&line.tenant, line.key_hash.as_ref(), &rows[0]) => written,
            () = gone(&mut replies) => return,
        };
        let _ = replies.pop().map(|reply| reply.send(written));
        return;
    }
    let (held_rows, mut held_replies): (Vec<W::Row>, Vec<Reply>) =
        held.into_iter().map(|job| (job.row, job.reply)).unzip();
    let result = tokio::select! {
        result = writer.write_many(line, &rows) => result,
        () = async { gone(&mut replies).await; gone(&mut held_replies).await } => return,
    };
    match result {
        Ok(written) => {
            for (row, reply) in rows.iter().zip(replies) {
                let _ = reply.send(Ok(written.contains(row.id())));
            }
            // Whether a held write's condition holds is its own: an update whose
            // revision was current still is if the one sent before it failed.
            one_by_one(writer, line, held_rows.iter().zip(held_replies)).await;
        }
        Err(err) if writer.everyones(&err) => {
            for reply in replies.into_iter().chain(held_replies) {
                let _ = reply.send(Err(err.duplicate()));
            }
        }
        Err(err) => {
            // Logged, so that a batch statement that keeps failing (and so doubles the
            // work of its writes) can be told from one that is merely slow.
            tracing::debug!(
                error = %err,
                rows = rows.len(),
                "a write batch failed; writing its rows one at a time"
            );
            let all = rows
                .iter()
                .zip(replies)
                .chain(held_rows.iter().zip(held_replies));
            one_by_one(writer, line, all).await;
        }
    }
}

/// Each write alone, in order; a caller that went away before its turn skipped.
async fn one_by_one<'r, W: BatchWriter>(
    writer: &W,
    line: &Line,
    writes: impl Iterator<Item = (&'r W::Row, Reply)>,
) {
    for (row, mut reply) in writes {
        let written = tokio::select! {
            written = writer.write_one(&line.tenant, line.key_hash.as_ref(), row) => written,
            () = reply.closed() => continue,
        };
        let _ = reply.send(written);
    }
}

/// Once every one of these callers has gone away.
async fn gone(replies: &mut [Reply]) {
    for reply in replies {
        reply.closed().await;
    }
}

/// The batch's rows in id order, at most one per claim, and the others, held back.
fn split<R: QueuedRow>(jobs: Vec<Job<R>>) -> (Vec<Job<R>>, Vec<Job<R>>) {
    let mut held = Vec::new();
    let mut seen = HashSet::new();
    let mut sent = Vec::with_capacity(jobs.len());
    for job in jobs {
        if seen.insert(job.row.claim().to_owned()) {
            sent.push(job);
        } else {
            held.push(job);
        }
    }
    sent.sort_by(|a, b| a.row.id().cmp(b.row.id()));
    (sent, held)
}

#[cfg(test)]
mod tests;
