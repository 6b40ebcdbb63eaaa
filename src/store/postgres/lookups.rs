//! Point reads under a caller's key (GetContact, GetContactByEmail), coalesced across
//! concurrent calls.
//!
//! Under load most of a point read's cost is per statement, not per row: a round
//! trip, a Bind/Execute, executor start-up and the API-key probe, on both sides of the
//! socket. So lookups queue here and go out as one `= ANY($2)` statement per batch:
//! a lookup that finds no statement in flight runs at once (alone, if nothing else is
//! waiting), and lookups that arrive while one is in flight wait for it and then share
//! one statement. An idle server adds no latency; a busy one sends fewer statements.
//! The key check stays in the statement, so a revoked key is refused on its next
//! call exactly as before.
//!
//! A lookup that arrives alone (no statement in flight, nothing queued) runs its
//! statement on its caller's own task, holding the one statement slot: queueing it
//! would cost two task hand-offs, a spawn and their wake-ups for nothing to share.
//! Lookups that arrive meanwhile queue behind that slot as they would behind a batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgRow;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::conns::Conns;
use super::rows::view_from_row;
use super::{classify, sql};
use crate::domain::{ContactView, TenantId};
use crate::store::lines::Lines;
use crate::store::{StoreCounters, StoreError, StoreResult};

/// Most lookups in one statement.
const MAX_BATCH: usize = 64;

/// How long a batch waits for the statement in flight before it takes a spare slot.
const PATIENCE: Duration = Duration::from_millis(5);

/// What a lookup is by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum By {
    Id,
    /// `Email::key()`, the column the unique index is on.
    EmailKey,
}

/// The contact, `None` when the key is live and there is no such contact, and
/// `KeyRejected` when the key is not a live key of the tenant.
type Found = StoreResult<Option<ContactView>>;

/// Whose lookup it is: lookups of one caller's key share a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Caller {
    tenant: TenantId,
    key_hash: [u8; 32],
}

struct Lookup {
    caller: Caller,
    by: By,
    key: String,
    reply: oneshot::Sender<Found>,
}

/// Most lookups waiting at once, and most of one caller's (per kind): past them a
/// lookup is refused at once (`Overloaded`), so the queue's memory is bounded and
/// one caller's flood cannot fill it for everyone.
const MAX_WAITING: usize = 8192;
const MAX_WAITING_PER_CALLER: usize = 1024;

/// Lookups waiting for a statement: one line per caller and kind, served in turn, so
/// a caller with many lookups waiting gets one statement and then the others' turn.
type Waiting = Lines<(Caller, By), Lookup>;

fn waiting_room() -> Waiting {
    Lines::new(MAX_WAITING, MAX_WAITING_PER_CALLER, MAX_BATCH)
}

fn line_of(lookup: &Lookup) -> (Caller, By) {
    (lookup.caller.clone(), lookup.by)
}

/// Whether a lookup's caller still waits (one gone away is dropped unanswered).
fn still_waiting(lookup: &Lookup) -> bool {
    !lookup.reply.is_closed()
}

/// What the callers and the worker share.
struct Shared {
    waiting: Mutex<Waiting>,
    /// The slot of the one statement normally in flight: a batch's, or a lone
    /// lookup's run by its caller.
    main: Arc<Semaphore>,
    work: Notify,
    stopped: AtomicBool,
    batches: AtomicU64,
    lookups: AtomicU64,
}

impl Shared {
    /// The statement slot, for a lookup that finds it free and nothing waiting.
    fn alone(&self) -> Option<OwnedSemaphorePermit> {
        let waiting = self.waiting();
        if waiting.len() > 0 {
            return None;
        }
        let slot = self.main.clone().try_acquire_owned().ok();
        drop(waiting);
        slot
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The queue of lookups; its worker ends when the store is dropped.
pub(super) struct Lookups {
    shared: Arc<Shared>,
    conns: Conns,
}

impl Lookups {
    /// One statement runs at a time, plus up to `spare` more while one is slow, each
    /// holding one connection, so lookups never take the whole pool from the other
    /// calls.
    pub fn start(conns: Conns, spare: usize) -> Self {
        let shared = Arc::new(Shared {
            waiting: Mutex::new(waiting_room()),
            main: Arc::new(Semaphore::new(1)),
            work: Notify::new(),
            stopped: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        });
        tokio::spawn(run(conns.clone(), shared.clone(), spare));
        Self { shared, conns }
    }

    /// Statements sent and lookups they answered, so far.
    pub fn counters(&self) -> StoreCounters {
        StoreCounters {
            lookup_batches: self.shared.batches.load(Ordering::Relaxed),
            lookups: self.shared.lookups.load(Ordering::Relaxed),
            ..StoreCounters::default()
        }
    }

    /// The contact with this id or email key, if `key_hash` is a live key of `tenant`.
    pub async fn get(&self, tenant: &TenantId, key_hash: &[u8; 32], by: By, key: &str) -> Found {
        let caller = Caller {
            tenant: tenant.clone(),
            key_hash: *key_hash,
        };
        if let Some(slot) = self.shared.alone() {
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
            self.shared.lookups.fetch_add(1, Ordering::Relaxed);
            let rows = fetch(&self.conns, &caller, by, &[key]).await;
            // Queued meanwhile: the worker takes the slot for their batch.
            drop(slot);
            return answer_one(by, key, rows);
        }
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            caller,
            by,
            key: key.to_owned(),
            reply,
        };
        if self
            .shared
            .waiting()
            .push(line_of(&lookup), lookup)
            .is_err()
        {
            return Err(StoreError::Overloaded("point reads"));
        }
        self.shared.work.notify_one();
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::internal("a lookup batch failed to answer")))
    }
}

impl Drop for Lookups {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.shared.work.notify_one();
    }
}

async fn run(conns: Conns, shared: Arc<Shared>, spare: usize) {
    let main = shared.main.clone();
    let spare = Arc::new(Semaphore::new(spare));
    loop {
        while shared.waiting().len() == 0 {
            if shared.stopped.load(Ordering::Relaxed) {
                return;
            }
            shared.work.notified().await;
        }
        // Whatever queues while this waits for a slot joins its batch. Batches go
        // one at a time: a second slot always open splits the same lookups over more
        // statements, which costs PostgreSQL more per lookup (BENCHMARKS.md). A
        // spare slot opens only when the statement in flight is slow (a cold page, a
        // big batch), so that one slow read does not hold every lookup behind it.
        let Ok(slot) = crate::store::coalesce::slot_or_spare(&main, &spare, PATIENCE).await else {
            return;
        };
        let Some(((caller, by), batch)) = shared.waiting().next_batch(still_waiting) else {
            continue;
        };
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared
            .lookups
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let conns = conns.clone();
        tokio::spawn(async move {
            answer_group(&conns, &caller, by, batch).await;
            drop(slot);
        });
    }
}

async fn answer_group(conns: &Conns, caller: &Caller, by: By, lookups: Vec<Lookup>) {
    // The callers of each key: the same contact may be asked for twice.
    let mut waiting: Callers = HashMap::new();
    for lookup in lookups {
        waiting.entry(lookup.key).or_default().push(lookup.reply);
    }
    let keys: Vec<&str> = waiting.keys().map(String::as_str).collect();
    match fetch(conns, caller, by, &keys).await {
        Ok(rows) => deliver(by, &rows, waiting),
        // An unavailable database is every caller's answer, as is any error of a
        // statement for one key.
        Err(err) if waiting.len() == 1 || matches!(err, StoreError::Unavailable(_)) => {
            deliver_error(&err, waiting)
        }
        // Anything else is retried one key at a time, so that one lookup cannot fail
        // the others, and each caller gets its own answer.
        Err(_) => {
            for (key, replies) in waiting {
                let one = HashMap::from([(key, replies)]);
                let keys: Vec<&str> = one.keys().map(String::as_str).collect();
                match fetch(conns, caller, by, &keys).await {
                    Ok(rows) => deliver(by, &rows, one),
                    Err(err) => deliver_error(&err, one),
                }
            }
        }
    }
}

type Callers = HashMap<String, Vec<oneshot::Sender<Found>>>;

/// Sends each caller its contact from the batch's rows.
fn deliver(by: By, rows: &[PgRow], mut waiting: Callers) {
    if rows.is_empty() {
        // No row at all: the key was not live.
        for reply in waiting.into_values().flatten() {
            let _ = reply.send(Err(StoreError::KeyRejected));
        }
        return;
    }
    for row in rows {
        let column = match by {
            By::Id => 0,
            By::EmailKey => sql::CONTACT_COLUMN_COUNT,
        };
        let matched: Option<String> = match row.try_get(column) {
            Ok(matched) => matched,
            // The statement's columns are not what this code reads: nobody's answer
            // can be trusted, so nobody gets "not found".
            Err(err) => return deliver_error(&classify(err), waiting),
        };
        // A row of NULLs: the key is live, none of the contacts exist.
        let Some(mut replies) = matched.and_then(|key| waiting.remove(&key)) else {
            continue;
        };
        let view = view_from_row(row);
        // The last caller of a key takes the view itself; only repeats clone it.
        let last = replies.pop();
        for reply in replies {
            let answer = match &view {
                Ok(view) => Ok(Some(view.clone())),
                Err(err) => Err(err.duplicate()),
            };
            let _ = reply.send(answer);
        }
        if let Some(reply) = last {
            let _ = reply.send(view.map(Some));
        }
    }
    for reply in waiting.into_values().flatten() {
        let _ = reply.send(Ok(None));
    }
}

/// A lone lookup's answer from its statement's rows, as `deliver` gives a batch's.
fn answer_one(by: By, key: &str, rows: StoreResult<Vec<PgRow>>) -> Found {
    let rows = rows?;
    if rows.is_empty() {
        return Err(StoreError::KeyRejected);
    }
    let column = match by {
        By::Id => 0,
        By::EmailKey => sql::CONTACT_COLUMN_COUNT,
    };
    for row in &rows {
        let matched: Option<String> = row.try_get(column).map_err(classify)?;
        if matched.as_deref() == Some(key) {
            return view_from_row(row).map(Some);
        }
    }
    Ok(None)
}

fn deliver_error(err: &StoreError, waiting: Callers) {
    for reply in waiting.into_values().flatten() {
        let _ = reply.send(Err(err.duplicate()));
    }
}

async fn fetch(conns: &Conns, caller: &Caller, by: By, keys: &[&str]) -> StoreResult<Vec<PgRow>> {
    let statement = match by {
        By::Id => sql::GET_CONTACTS_CHECKED,
        By::EmailKey => sql::GET_CONTACTS_BY_EMAIL_CHECKED,
    };
    let mut conn = conns.get().await?;
    let rows = sqlx::query(statement)
        .bind(caller.tenant.as_str())
        .bind(keys)
        .bind(&caller.key_hash[..])
        .fetch_all(&mut *conn)
        .await;
    conn.finish(rows).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(tenant: &str, key: &str) -> (Lookup, oneshot::Receiver<Found>) {
        let (reply, answer) = oneshot::channel();
        let caller = Caller {
            tenant: TenantId::parse(tenant).expect("tenant"),
            key_hash: [0; 32],
        };
        let lookup = Lookup {
            caller,
            by: By::Id,
            key: key.to_owned(),
            reply,
        };
        (lookup, answer)
    }

    fn tenant_of(batch: &((Caller, By), Vec<Lookup>)) -> String {
        batch.0.0.tenant.as_str().to_owned()
    }

    #[test]
    fn callers_take_turns_whatever_one_of_them_queued() {
        let mut waiting = waiting_room();
        let mut answers = Vec::new();
        for i in 0..100 {
            let (l, a) = lookup("flood", &i.to_string());
            answers.push(a);
            assert!(waiting.push(line_of(&l), l).is_ok());
        }
        let (l, a) = lookup("quiet", "1");
        answers.push(a);
        assert!(waiting.push(line_of(&l), l).is_ok());
        let first = waiting.next_batch(still_waiting).expect("a batch");
        assert_eq!(
            (tenant_of(&first).as_str(), first.1.len()),
            ("flood", MAX_BATCH)
        );
        let second = waiting.next_batch(still_waiting).expect("a batch");
        assert_eq!(
            (tenant_of(&second).as_str(), second.1.len()),
            ("quiet", 1),
            "the quiet caller is next, not after the flood"
        );
        let third = waiting.next_batch(still_waiting).expect("a batch");
        assert_eq!((tenant_of(&third).as_str(), third.1.len()), ("flood", 36));
        assert!(waiting.next_batch(still_waiting).is_none());
        assert_eq!(waiting.len(), 0);
    }

    #[test]
    fn a_full_line_refuses_more_and_others_still_queue() {
        let mut waiting = waiting_room();
        let mut answers = Vec::new();
        for i in 0..MAX_WAITING_PER_CALLER {
            let (l, a) = lookup("flood", &i.to_string());
            answers.push(a);
            assert!(waiting.push(line_of(&l), l).is_ok(), "lookup {i} fits");
        }
        let (l, _a) = lookup("flood", "one more");
        assert!(
            waiting.push(line_of(&l), l).is_err(),
            "the caller's line is full"
        );
        let (l, _b) = lookup("quiet", "1");
        assert!(
            waiting.push(line_of(&l), l).is_ok(),
            "another caller still queues"
        );
    }

    #[test]
    fn lookups_whose_callers_left_are_dropped() {
        let mut waiting = waiting_room();
        let (gone, answer) = lookup("t", "gone");
        drop(answer);
        assert!(waiting.push(line_of(&gone), gone).is_ok());
        let (kept, _answer) = lookup("t", "kept");
        assert!(waiting.push(line_of(&kept), kept).is_ok());
        let (_, batch) = waiting.next_batch(still_waiting).expect("a batch");
        let keys: Vec<&str> = batch.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["kept"]);
        assert_eq!(waiting.len(), 0);
    }
}
