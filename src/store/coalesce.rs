//! CreateContact, coalesced across concurrent calls on either backend: at most
//! `slots` batches in flight (`--db-write-batches`; 0 sends every create alone), and
//! `spare` more while those wait longer than `PATIENCE`. How a batch is written is
//! the backend's (`CreateWriter`): one statement on PostgreSQL
//! (`postgres/writes.rs`), one transaction of the import's batch statements on
//! SQLite (`sqlite/creates.rs`). What is here is the rule of who shares a batch and
//! what each call is answered.
//!
//! A create that finds a slot free and nothing queued goes at once, alone, on its
//! caller's task: an idle server adds no latency. Creates that arrive while the
//! slots are taken queue, one line per caller (tenant and key), and the next free
//! slot writes a line's queue as one batch, so one commit and one key check serve
//! them all. A batch stuck on a lock holds its own callers only: past `PATIENCE` a
//! spare slot, where the backend has one, carries the next line's.
//!
//! Every call still gets its own answer:
//! - a create whose address is taken (in the table, or by a concurrent insert that
//!   commits) writes nothing for its row and is that call's `Conflict`; of two
//!   creates of one address in a batch, the first goes in the batch and the other is
//!   a `Conflict` once the batch has succeeded (either the first took the address or
//!   it was already taken);
//! - a revoked key: the batch is that key's calls only, all rejected;
//! - any other failure of the batch (a value the database refuses, a deadlock)
//!   sends every call alone, so one bad write cannot fail the others. An unreachable
//!   database is everyone's answer (`CreateWriter::everyones`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{AcquireError, Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::{StoreError, StoreResult};
use crate::domain::TenantId;

/// Most creates in one batch.
const MAX_BATCH: usize = 64;

/// How long queued creates wait for a batch in flight before a spare slot carries
/// them: several times what a full batch takes (BENCHMARKS.md, "Coalesced creates on
/// by default"), so a batch in flight this long is waiting (on a lock: another
/// transaction's insert of the same address, or its tenant's row), and must not
/// hold every tenant's creates behind it.
const PATIENCE: Duration = Duration::from_millis(50);

/// Most creates waiting at once, and most of one line's: past them a create is
/// refused at once (`Overloaded`), so the queue's memory is bounded and one caller's
/// flood cannot fill it for everyone.
const MAX_WAITING: usize = 4096;
const MAX_WAITING_PER_LINE: usize = 512;

/// A create as a backend writes it.
pub(crate) trait CreateRow: Send + Sync + 'static {
    /// The new contact's id.
    fn id(&self) -> &str;
    /// Its address's key (unique per tenant).
    fn email_key(&self) -> &str;
}

/// Whether the contact was written (`false`: its address is taken).
pub(crate) type Written = StoreResult<bool>;

/// How a backend writes creates.
#[async_trait]
pub(crate) trait CreateWriter: Send + Sync + 'static {
    type Row: CreateRow;

    /// One create, with its entry and change, if `key_hash` (when given) is a live
    /// key of `tenant` (else `KeyRejected`).
    async fn create_one(
        &self,
        tenant: &TenantId,
        key_hash: Option<&[u8; 32]>,
        row: &Self::Row,
    ) -> Written;

    /// `rows` (distinct addresses, in id order) in one batch for the line's key:
    /// the ids of the contacts it wrote, or `KeyRejected`.
    async fn create_many(&self, line: &Line, rows: &[Self::Row]) -> StoreResult<HashSet<String>>;

    /// Whether every create of a failed batch would get `err` going alone.
    fn everyones(&self, err: &StoreError) -> bool {
        matches!(err, StoreError::Unavailable(_) | StoreError::KeyRejected)
    }
}

/// Whose creates may share a batch: one key's, which the batch checks once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Line {
    pub tenant: TenantId,
    pub key_hash: [u8; 32],
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
}

/// Creates waiting for a batch, one line per caller, served in turn.
struct Waiting<R> {
    lines: HashMap<Line, VecDeque<Job<R>>>,
    turns: VecDeque<Line>,
    len: usize,
}

impl<R> Default for Waiting<R> {
    fn default() -> Self {
        Self {
            lines: HashMap::new(),
            turns: VecDeque::new(),
            len: 0,
        }
    }
}

impl<R> Waiting<R> {
    /// Queues `job`; `false` (the job dropped) when the queue or its line is full.
    fn push(&mut self, line: Line, job: Job<R>) -> bool {
        if self.len >= MAX_WAITING {
            return false;
        }
        let queue = self.lines.entry(line.clone()).or_default();
        if queue.len() >= MAX_WAITING_PER_LINE {
            return false;
        }
        if queue.is_empty() {
            self.turns.push_back(line);
        }
        queue.push_back(job);
        self.len += 1;
        true
    }

    /// The next line's creates whose callers still wait, up to a batch's worth. A
    /// caller that went away before its batch was sent wrote nothing, as a call
    /// cancelled before its statement would not have.
    fn next_batch(&mut self) -> Option<(Line, Vec<Job<R>>)> {
        while let Some(line) = self.turns.pop_front() {
            let Some(queue) = self.lines.get_mut(&line) else {
                continue;
            };
            let mut batch = Vec::new();
            while batch.len() < MAX_BATCH {
                let Some(job) = queue.pop_front() else {
                    break;
                };
                self.len -= 1;
                if !job.reply.is_closed() {
                    batch.push(job);
                }
            }
            if queue.is_empty() {
                self.lines.remove(&line);
            } else {
                self.turns.push_back(line.clone());
            }
            if !batch.is_empty() {
                return Some((line, batch));
            }
        }
        None
    }
}

struct Shared<R> {
    waiting: Mutex<Waiting<R>>,
    /// The batches normally in flight, and lone creates run by their callers.
    slots: Arc<Semaphore>,
    /// More, for a batch whose wait for `slots` passed `PATIENCE`.
    spare: Arc<Semaphore>,
    work: Notify,
    stopped: AtomicBool,
    batches: AtomicU64,
    creates: AtomicU64,
}

impl<R> Shared<R> {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting<R>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A slot, for a create that finds one free and nothing waiting.
    fn alone(&self) -> Option<OwnedSemaphorePermit> {
        let waiting = self.waiting();
        if waiting.len > 0 {
            return None;
        }
        let slot = self.slots.clone().try_acquire_owned().ok();
        drop(waiting);
        slot
    }
}

/// The queue of creates; its worker ends when this is dropped.
pub(crate) struct Creates<W: CreateWriter> {
    shared: Arc<Shared<W::Row>>,
    writer: Arc<W>,
    /// No queue: every create goes alone (`--db-write-batches 0`).
    direct: bool,
}

impl<W: CreateWriter> Creates<W> {
    /// At most `slots` batches in flight, and `spare` more while those are slow;
    /// with no slots, every create goes alone.
    pub fn start(writer: W, slots: usize, spare: usize) -> Self {
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Waiting::default()),
            slots: Arc::new(Semaphore::new(slots)),
            spare: Arc::new(Semaphore::new(spare)),
            work: Notify::new(),
            stopped: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            creates: AtomicU64::new(0),
        });
        let writer = Arc::new(writer);
        if slots > 0 {
            tokio::spawn(run(writer.clone(), shared.clone()));
        }
        Self {
            shared,
            writer,
            direct: slots == 0,
        }
    }

    /// Batches written for queued creates, and the creates they carried, so far.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.shared.batches.load(Ordering::Relaxed),
            self.shared.creates.load(Ordering::Relaxed),
        )
    }

    /// Writes the create if `key_hash` (when given) is a live key of `tenant` (else
    /// `KeyRejected`); `false` if its address is taken.
    pub async fn create(
        &self,
        tenant: &TenantId,
        key_hash: Option<&[u8; 32]>,
        row: W::Row,
    ) -> Written {
        // Trusted callers (no key) are rare: they go alone.
        let Some(key_hash) = key_hash else {
            return self.writer.create_one(tenant, None, &row).await;
        };
        if self.direct {
            return self.writer.create_one(tenant, Some(key_hash), &row).await;
        }
        // Alone, it runs on its caller's task holding a slot: queueing it would cost
        // hand-offs and wake-ups for nothing to share. Creates that arrive meanwhile
        // queue behind that slot as they would behind a batch.
        if let Some(slot) = self.shared.alone() {
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
            self.shared.creates.fetch_add(1, Ordering::Relaxed);
            let written = self.writer.create_one(tenant, Some(key_hash), &row).await;
            drop(slot);
            return written;
        }
        let line = Line {
            tenant: tenant.clone(),
            key_hash: *key_hash,
        };
        let (reply, answer) = oneshot::channel();
        if !self.shared.waiting().push(line, Job { row, reply }) {
            return Err(StoreError::Overloaded("writes"));
        }
        self.shared.work.notify_one();
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::internal("a write batch failed to answer")))
    }
}

impl<W: CreateWriter> Drop for Creates<W> {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.shared.work.notify_one();
    }
}

async fn run<W: CreateWriter>(writer: Arc<W>, shared: Arc<Shared<W::Row>>) {
    loop {
        while shared.waiting().len == 0 {
            if shared.stopped.load(Ordering::Relaxed) {
                return;
            }
            shared.work.notified().await;
        }
        // Whatever queues while this waits for a slot joins the next batch.
        let Ok(slot) = slot_or_spare(&shared.slots, &shared.spare, PATIENCE).await else {
            return;
        };
        let Some((line, batch)) = shared.waiting().next_batch() else {
            continue;
        };
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared
            .creates
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let writer = writer.clone();
        tokio::spawn(async move {
            write_batch(writer.as_ref(), &line, batch).await;
            drop(slot);
        });
    }
}

async fn write_batch<W: CreateWriter>(writer: &W, line: &Line, jobs: Vec<Job<W::Row>>) {
    let (sent, held) = split(jobs);
    let (rows, mut replies): (Vec<W::Row>, Vec<Reply>) =
        sent.into_iter().map(|job| (job.row, job.reply)).unzip();
    let one = |row| writer.create_one(&line.tenant, Some(&line.key_hash), row);
    if rows.len() == 1 && held.is_empty() {
        // A caller that goes away takes its write with it, as before the queue.
        let written = tokio::select! {
            written = one(&rows[0]) => written,
            () = gone(&mut replies) => return,
        };
        let _ = replies.pop().map(|reply| reply.send(written));
        return;
    }
    let (held_rows, mut held_replies): (Vec<W::Row>, Vec<Reply>) =
        held.into_iter().map(|job| (job.row, job.reply)).unzip();
    let result = tokio::select! {
        result = writer.create_many(line, &rows) => result,
        () = async { gone(&mut replies).await; gone(&mut held_replies).await } => return,
    };
    match result {
        Ok(written) => {
            for (row, reply) in rows.iter().zip(replies) {
                let _ = reply.send(Ok(written.contains(row.id())));
            }
            // See the module's comment: after the batch, none of these can write.
            for reply in held_replies {
                let _ = reply.send(Ok(false));
            }
        }
        Err(err) if writer.everyones(&err) => {
            for reply in replies.into_iter().chain(held_replies) {
                let _ = reply.send(Err(err.duplicate()));
            }
        }
        Err(_) => {
            let all = rows
                .iter()
                .zip(replies)
                .chain(held_rows.iter().zip(held_replies));
            for (row, mut reply) in all {
                let written = tokio::select! {
                    written = one(row) => written,
                    () = reply.closed() => continue,
                };
                let _ = reply.send(written);
            }
        }
    }
}

/// Once every one of these callers has gone away.
async fn gone(replies: &mut [Reply]) {
    for reply in replies {
        reply.closed().await;
    }
}

/// The batch's rows in id order, at most one per address, and the others, held back.
fn split<R: CreateRow>(jobs: Vec<Job<R>>) -> (Vec<Job<R>>, Vec<Job<R>>) {
    let mut held = Vec::new();
    let mut seen = HashSet::new();
    let mut sent = Vec::with_capacity(jobs.len());
    for job in jobs {
        if seen.insert(job.row.email_key().to_owned()) {
            sent.push(job);
        } else {
            held.push(job);
        }
    }
    sent.sort_by(|a, b| a.row.id().cmp(b.row.id()));
    (sent, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row(&'static str, String);

    impl CreateRow for Row {
        fn id(&self) -> &str {
            self.0
        }
        fn email_key(&self) -> &str {
            &self.1
        }
    }

    fn job(id: &'static str, email_key: &str) -> (Job<Row>, oneshot::Receiver<Written>) {
        let (reply, answer) = oneshot::channel();
        let row = Row(id, email_key.to_owned());
        (Job { row, reply }, answer)
    }

    fn line(tenant: &str) -> Line {
        Line {
            tenant: TenantId::parse(tenant).expect("tenant"),
            key_hash: [0; 32],
        }
    }

    #[test]
    fn a_create_batch_sends_each_address_once_in_id_order() {
        let jobs = vec![job("c3", "a").0, job("c1", "b").0, job("c2", "a").0];
        let (sent, held) = split(jobs);
        let sent: Vec<&str> = sent.iter().map(|j| j.row.id()).collect();
        let held: Vec<&str> = held.iter().map(|j| j.row.id()).collect();
        assert_eq!(sent, ["c1", "c3"], "the first create of `a` goes");
        assert_eq!(held, ["c2"]);
    }

    #[test]
    fn lines_take_turns_and_full_lines_refuse() {
        let mut waiting = Waiting::default();
        let flood = line("t");
        let quiet = line("quiet");
        let mut answers = Vec::new();
        for i in 0..MAX_WAITING_PER_LINE {
            let (j, a) = job("f", &format!("{i}@x"));
            answers.push(a);
            assert!(waiting.push(flood.clone(), j));
        }
        assert!(!waiting.push(flood.clone(), job("more", "more@x").0));
        let (j, a) = job("q", "q@x");
        answers.push(a);
        assert!(waiting.push(quiet.clone(), j));
        let (first, batch) = waiting.next_batch().expect("a batch");
        assert_eq!((first, batch.len()), (flood.clone(), MAX_BATCH));
        let (second, batch) = waiting.next_batch().expect("a batch");
        assert_eq!((second, batch.len()), (quiet, 1), "the quiet line is next");
    }
}
