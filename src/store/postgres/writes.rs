//! CreateContact, coalesced across concurrent calls as point reads are
//! (`lookups.rs`): `--db-write-batches` statements in flight (1 by default, which
//! makes the largest batches; 0 sends every create as its own statement), and one
//! spare while those wait longer than `PATIENCE`. UpdateContact's compare-and-set
//! write is one statement per call: coalesced, it measured slower than alone
//! (BENCHMARKS.md, "Coalesced creates on by default"), and that path was removed.
//!
//! A create that finds a slot free and nothing queued goes at once, alone, as the
//! one-call statement (`sql::CREATE_CONTACT_CHECKED`) on its caller's task: an idle
//! server adds no latency. Creates that arrive while the slots are taken queue, one
//! line per caller (tenant and key), and the next free slot sends a line's queue as
//! one statement (`sql::CREATE_CONTACTS_CHECKED`), so one commit, one round trip and
//! one key check serve them all. A statement stuck on a lock holds its own callers
//! only: past `PATIENCE` the spare slot carries the next line's.
//!
//! Every call still gets its own answer:
//! - a create whose address is taken (in the table, or by a concurrent insert that
//!   commits) inserts nothing for its row (`ON CONFLICT DO NOTHING`) and is that
//!   call's `Conflict`; of two creates of one address in a batch, the first goes in
//!   the statement and the other is a `Conflict` once the statement has succeeded
//!   (either the first took the address or it was already taken);
//! - a revoked key: the batch is that key's calls only, all rejected;
//! - any other failure of the statement (a value PostgreSQL refuses, a deadlock)
//!   sends every call alone, so one bad write cannot fail the others. An unreachable
//!   database is everyone's answer.
//!
//! Each contact's change is stamped in the statement by the one-call statements'
//! expression, after its row is written (ARCHITECTURE.md, the change feed): one
//! transaction for many contacts orders them as it would one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo};
use sqlx::{Postgres, Row};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::conns::Conns;
use super::{classify, sql};
use crate::domain::{Contact, TenantId, TimelineEntry, search_text};
use crate::store::{StoreError, StoreResult};

/// Most writes in one statement.
const MAX_BATCH: usize = 64;

/// How long queued creates wait for a statement in flight before a spare slot
/// carries them: several times what a full batch takes (BENCHMARKS.md, "Coalesced
/// creates on by default"), so a statement in flight this long is waiting (on a
/// lock: another transaction's insert of the same address, or its tenant's row),
/// and must not hold every tenant's creates behind it.
const PATIENCE: Duration = Duration::from_millis(50);

/// Most writes waiting at once, and most of one line's: past them a write is
/// refused at once (`Overloaded`), so the queue's memory is bounded and one caller's
/// flood cannot fill it for everyone.
const MAX_WAITING: usize = 4096;
const MAX_WAITING_PER_LINE: usize = 512;

/// One contact's row as both statements bind it: the values of the contact, its
/// timeline entry, and (for an update) the revision it was merged from.
pub(super) struct WriteRow {
    id: String,
    email: String,
    email_key: String,
    /// JSON text.
    properties: String,
    search_text: String,
    at: DateTime<Utc>,
    entry_id: String,
    entry_kind: String,
    /// JSON text.
    entry_data: String,
    revision: i64,
}

impl WriteRow {
    /// Built on the caller's task, so the JSON is serialized there, not in the worker.
    pub fn new(
        contact: &Contact,
        at: DateTime<Utc>,
        entry: &TimelineEntry,
        revision: i64,
    ) -> StoreResult<Self> {
        Ok(Self {
            id: contact.id.as_str().to_owned(),
            email: contact.email.as_str().to_owned(),
            email_key: contact.email.key().to_owned(),
            properties: serde_json::to_string(contact.properties.as_map())
                .map_err(StoreError::internal)?,
            search_text: search_text(contact.email.as_str(), &contact.properties),
            at,
            entry_id: entry.id.clone(),
            entry_kind: entry.kind.clone(),
            entry_data: serde_json::to_string(&entry.data).map_err(StoreError::internal)?,
            revision,
        })
    }
}

/// JSON text bound as `jsonb` without parsing it again: the binary format is a
/// version byte and the text.
struct JsonText<'a>(&'a str);

impl sqlx::Type<Postgres> for JsonText<'_> {
    fn type_info() -> PgTypeInfo {
        <sqlx::types::Json<()> as sqlx::Type<Postgres>>::type_info()
    }
}

impl sqlx::Encode<'_, Postgres> for JsonText<'_> {
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        buf.push(1);
        buf.extend_from_slice(self.0.as_bytes());
        Ok(sqlx::encode::IsNull::No)
    }
}

/// Whose creates may share a statement: one key's, which the statement checks once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Line {
    tenant: TenantId,
    key_hash: [u8; 32],
}

impl Line {
    /// One create of this line as its own statement.
    async fn create_one(&self, conns: &Conns, row: &WriteRow) -> Written {
        create_one(conns, &self.tenant, Some(&self.key_hash), row).await
    }
}

/// A create: whether the contact was written (`false`: its address is taken); an
/// update: whether the row was still at the revision.
type Written = StoreResult<bool>;

struct Job {
    row: WriteRow,
    reply: Reply,
}

/// Writes waiting for a statement, one line per caller, served in turn.
#[derive(Default)]
struct Waiting {
    lines: HashMap<Line, VecDeque<Job>>,
    turns: VecDeque<Line>,
    len: usize,
}

impl Waiting {
    /// Queues `job`; `false` (the job dropped) when the queue or its line is full.
    fn push(&mut self, line: Line, job: Job) -> bool {
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

    /// The next line's writes whose callers still wait, up to a statement's worth.
    /// A caller that went away before its statement was sent wrote nothing, as a
    /// call cancelled before its statement would not have.
    fn next_batch(&mut self) -> Option<(Line, Vec<Job>)> {
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

struct Shared {
    waiting: Mutex<Waiting>,
    /// The statements normally in flight: batches', and lone writes' run by their
    /// callers.
    slots: Arc<Semaphore>,
    /// One more, for a batch whose wait for `slots` passed `PATIENCE`.
    spare: Arc<Semaphore>,
    work: Notify,
    stopped: AtomicBool,
    batches: AtomicU64,
    writes: AtomicU64,
}

impl Shared {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A statement slot, for a write that finds one free and nothing waiting.
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

/// The queue of writes; its worker ends when the store is dropped.
pub(super) struct Writes {
    shared: Arc<Shared>,
    conns: Conns,
    /// No queue: every write is its own statement (`--db-write-batches 0`).
    direct: bool,
}

impl Writes {
    /// At most `slots` write statements in flight (and a spare one while they are
    /// slow), each holding one connection; with none, every write goes alone.
    pub fn start(conns: Conns, slots: usize) -> Self {
        let shared = Arc::new(Shared {
            waiting: Mutex::default(),
            slots: Arc::new(Semaphore::new(slots)),
            spare: Arc::new(Semaphore::new(1)),
            work: Notify::new(),
            stopped: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        });
        if slots > 0 {
            tokio::spawn(run(conns.clone(), shared.clone()));
        }
        Self {
            shared,
            conns,
            direct: slots == 0,
        }
    }

    /// Statements sent for queued writes, and the writes they carried, so far.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.shared.batches.load(Ordering::Relaxed),
            self.shared.writes.load(Ordering::Relaxed),
        )
    }

    /// Inserts the contact, its `contact.created` entry and its change if `key_hash`
    /// is a live key of `tenant` (else `KeyRejected`); `false` if its address is taken.
    pub async fn create(
        &self,
        tenant: &TenantId,
        key_hash: Option<&[u8; 32]>,
        row: WriteRow,
    ) -> Written {
        match key_hash {
            Some(key_hash) => {
                let line = Line {
                    tenant: tenant.clone(),
                    key_hash: *key_hash,
                };
                self.queue(line, row).await
            }
            // Trusted callers (no key) are rare: they go alone.
            None => create_one(&self.conns, tenant, None, &row).await,
        }
    }

    /// Writes the merged contact, its `contact.updated` entry and its change if the
    /// row is still at `row`'s revision; whether it was. Always its own statement.
    pub async fn update(&self, tenant: &TenantId, row: WriteRow) -> Written {
        update_one(&self.conns, tenant, &row).await
    }

    async fn queue(&self, line: Line, row: WriteRow) -> Written {
        if self.direct {
            return line.create_one(&self.conns, &row).await;
        }
        // Alone, it runs on its caller's task holding a slot: queueing it would cost
        // hand-offs and wake-ups for nothing to share. Writes that arrive meanwhile
        // queue behind that slot as they would behind a batch.
        if let Some(slot) = self.shared.alone() {
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
            self.shared.writes.fetch_add(1, Ordering::Relaxed);
            let written = line.create_one(&self.conns, &row).await;
            drop(slot);
            return written;
        }
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

impl Drop for Writes {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.shared.work.notify_one();
    }
}

async fn run(conns: Conns, shared: Arc<Shared>) {
    loop {
        while shared.waiting().len == 0 {
            if shared.stopped.load(Ordering::Relaxed) {
                return;
            }
            shared.work.notified().await;
        }
        // Whatever queues while this waits for a slot joins the next batch.
        let Ok(slot) = super::slot_or_spare(&shared.slots, &shared.spare, PATIENCE).await else {
            return;
        };
        let Some((line, batch)) = shared.waiting().next_batch() else {
            continue;
        };
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let conns = conns.clone();
        tokio::spawn(async move {
            write_batch(&conns, &line, batch).await;
            drop(slot);
        });
    }
}

async fn write_batch(conns: &Conns, line: &Line, jobs: Vec<Job>) {
    let (sent, held) = split(jobs);
    let (rows, mut replies): (Vec<WriteRow>, Vec<Reply>) =
        sent.into_iter().map(|job| (job.row, job.reply)).unzip();
    if rows.len() == 1 && held.is_empty() {
        // A caller that goes away takes its statement with it, as before the queue:
        // the dropped connection is cancelled by the pool (`conns.rs`).
        let written = tokio::select! {
            written = line.create_one(conns, &rows[0]) => written,
            () = gone(&mut replies) => return,
        };
        let _ = replies.pop().map(|reply| reply.send(written));
        return;
    }
    let (held_rows, mut held_replies): (Vec<WriteRow>, Vec<Reply>) =
        held.into_iter().map(|job| (job.row, job.reply)).unzip();
    let result = tokio::select! {
        result = write_many(conns, line, &rows) => result,
        () = async { gone(&mut replies).await; gone(&mut held_replies).await } => return,
    };
    match result {
        Ok(written) => {
            for (row, reply) in rows.iter().zip(replies) {
                let _ = reply.send(Ok(written.contains(&row.id)));
            }
            // See the module's comment: after the statement, none of these can write.
            for reply in held_replies {
                let _ = reply.send(Ok(false));
            }
        }
        Err(err) if everyones(&err) => {
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
                    written = line.create_one(conns, row) => written,
                    () = reply.closed() => continue,
                };
                let _ = reply.send(written);
            }
        }
    }
}

type Reply = oneshot::Sender<Written>;

/// Once every one of these callers has gone away.
async fn gone(replies: &mut [Reply]) {
    for reply in replies {
        reply.closed().await;
    }
}

/// The batch's rows in id order, at most one per address, and the others, held back.
fn split(jobs: Vec<Job>) -> (Vec<Job>, Vec<Job>) {
    let mut held = Vec::new();
    let mut seen = HashSet::new();
    let mut sent = Vec::with_capacity(jobs.len());
    for job in jobs {
        if seen.insert(job.row.email_key.clone()) {
            sent.push(job);
        } else {
            held.push(job);
        }
    }
    sent.sort_by(|a, b| a.row.id.cmp(&b.row.id));
    (sent, held)
}

/// An error every write of the batch would get going alone.
fn everyones(err: &StoreError) -> bool {
    match err {
        // A deadlock or serialization failure is the batch's, not the database's.
        StoreError::Unavailable(sqlx::Error::Database(db)) => {
            !matches!(db.code().as_deref(), Some("40P01" | "40001"))
        }
        // A batch is one key's creates.
        StoreError::Unavailable(_) | StoreError::KeyRejected => true,
        _ => false,
    }
}

/// The ten parameters the one-call create and update share, in their order.
fn bind_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    tenant: &'q TenantId,
    row: &'q WriteRow,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(tenant.as_str())
        .bind(&row.id)
        .bind(&row.email)
        .bind(&row.email_key)
        .bind(JsonText(&row.properties))
        .bind(&row.search_text)
        .bind(row.at)
        .bind(&row.entry_id)
        .bind(&row.entry_kind)
        .bind(JsonText(&row.entry_data))
}

/// The one-call create: a taken address is the unique index's error.
async fn create_one(
    conns: &Conns,
    tenant: &TenantId,
    key_hash: Option<&[u8; 32]>,
    row: &WriteRow,
) -> Written {
    let statement = match key_hash {
        Some(_) => sql::CREATE_CONTACT_CHECKED,
        None => sql::CREATE_CONTACT,
    };
    let mut query = bind_row(sqlx::query(statement), tenant, row);
    if let Some(key_hash) = key_hash {
        query = query.bind(&key_hash[..]);
    }
    let mut conn = conns.get().await?;
    let result = query.execute(&mut *conn).await;
    match conn.finish(result).await {
        // Under a key, the statement inserts nothing unless the key is live.
        Ok(done) if done.rows_affected() == 0 => Err(StoreError::KeyRejected),
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { field: "email" }) => Ok(false),
        Err(err) => Err(err),
    }
}

async fn update_one(conns: &Conns, tenant: &TenantId, row: &WriteRow) -> Written {
    let query =
        bind_row(sqlx::query(sql::UPDATE_CONTACT_IF_REVISION), tenant, row).bind(row.revision);
    let mut conn = conns.get().await?;
    let result = query.execute(&mut *conn).await;
    Ok(conn.finish(result).await?.rows_affected() == 1)
}

/// One statement for `rows` (addresses distinct): the ids of the contacts it wrote,
/// or `KeyRejected` if the line's key is not live.
async fn write_many(conns: &Conns, line: &Line, rows: &[WriteRow]) -> StoreResult<HashSet<String>> {
    fn column<'a, T: ?Sized>(
        rows: &'a [WriteRow],
        f: impl Fn(&'a WriteRow) -> &'a T,
    ) -> Vec<&'a T> {
        rows.iter().map(f).collect()
    }
    let ats: Vec<DateTime<Utc>> = rows.iter().map(|row| row.at).collect();
    let query = sqlx::query(sql::CREATE_CONTACTS_CHECKED)
        .bind(line.tenant.as_str())
        .bind(&line.key_hash[..])
        .bind(column(rows, |r| r.id.as_str()))
        .bind(column(rows, |r| r.email.as_str()))
        .bind(column(rows, |r| r.email_key.as_str()))
        .bind(column(rows, |r| r.properties.as_str()))
        .bind(column(rows, |r| r.search_text.as_str()))
        .bind(ats)
        .bind(column(rows, |r| r.entry_id.as_str()))
        .bind(column(rows, |r| r.entry_kind.as_str()))
        .bind(column(rows, |r| r.entry_data.as_str()));
    let mut conn = conns.get().await?;
    let result = query.fetch_all(&mut *conn).await;
    let found = conn.finish(result).await?;
    // No row at all means the key was rejected; the key's row is NULL.
    if found.is_empty() {
        return Err(StoreError::KeyRejected);
    }
    let mut written = HashSet::with_capacity(found.len());
    for row in found {
        let id: Option<String> = row.try_get(0).map_err(classify)?;
        written.extend(id);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, email_key: &str) -> (Job, oneshot::Receiver<Written>) {
        let (reply, answer) = oneshot::channel();
        let row = WriteRow {
            id: id.to_owned(),
            email: email_key.to_owned(),
            email_key: email_key.to_owned(),
            properties: "{}".into(),
            search_text: String::new(),
            at: Utc::now(),
            entry_id: String::new(),
            entry_kind: String::new(),
            entry_data: "{}".into(),
            revision: 0,
        };
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
        let sent: Vec<&str> = sent.iter().map(|j| j.row.id.as_str()).collect();
        let held: Vec<&str> = held.iter().map(|j| j.row.id.as_str()).collect();
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
            let (j, a) = job(&i.to_string(), &format!("{i}@x"));
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
