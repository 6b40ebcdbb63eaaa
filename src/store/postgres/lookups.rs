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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgRow;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::conns::Conns;
use super::rows::view_from_row;
use super::{classify, sql};
use crate::domain::{ContactView, TenantId};
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

/// The queue of lookups; its worker ends when the store is dropped.
pub(super) struct Lookups {
    queue: mpsc::UnboundedSender<Lookup>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    lookups: AtomicU64,
}

impl Lookups {
    /// One statement runs at a time, plus up to `spare` more while one is slow, each
    /// holding one connection, so lookups never take the whole pool from the other
    /// calls.
    pub fn start(conns: Conns, spare: usize) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(conns, rx, spare, counters.clone()));
        Self { queue, counters }
    }

    /// Statements sent and lookups they answered, so far.
    pub fn counters(&self) -> StoreCounters {
        StoreCounters {
            lookup_batches: self.counters.batches.load(Ordering::Relaxed),
            lookups: self.counters.lookups.load(Ordering::Relaxed),
        }
    }

    /// The contact with this id or email key, if `key_hash` is a live key of `tenant`.
    pub async fn get(&self, tenant: &TenantId, key_hash: &[u8; 32], by: By, key: &str) -> Found {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            caller: Caller {
                tenant: tenant.clone(),
                key_hash: *key_hash,
            },
            by,
            key: key.to_owned(),
            reply,
        };
        if self.queue.send(lookup).is_err() {
            return Err(StoreError::internal("the lookup worker stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::internal("a lookup batch failed to answer")))
    }
}

async fn run(
    conns: Conns,
    mut queue: mpsc::UnboundedReceiver<Lookup>,
    spare: usize,
    counters: Arc<Counters>,
) {
    let main = Arc::new(Semaphore::new(1));
    let spare = Arc::new(Semaphore::new(spare));
    while let Some(first) = queue.recv().await {
        // Whatever queues while this waits for a slot joins its batch. Batches go
        // one at a time: a second slot always open splits the same lookups over more
        // statements, which costs PostgreSQL more per lookup (BENCHMARKS.md). A
        // spare slot opens only when the statement in flight is slow (a cold page, a
        // big batch), so that one slow read does not hold every lookup behind it.
        let slot = tokio::select! {
            biased;
            slot = main.clone().acquire_owned() => slot,
            slot = async {
                tokio::time::sleep(PATIENCE).await;
                spare.clone().acquire_owned().await
            } => slot,
        };
        let Ok(slot) = slot else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(lookup) => batch.push(lookup),
                Err(_) => break,
            }
        }
        let conns = conns.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            answer(&conns, &counters, batch).await;
            drop(slot);
        });
    }
}

/// One statement per key and kind of lookup in the batch (usually one in all).
async fn answer(conns: &Conns, counters: &Counters, batch: Vec<Lookup>) {
    let mut groups: HashMap<(Caller, By), Vec<Lookup>> = HashMap::new();
    for lookup in batch {
        groups
            .entry((lookup.caller.clone(), lookup.by))
            .or_default()
            .push(lookup);
    }
    for ((caller, by), lookups) in groups {
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .lookups
            .fetch_add(lookups.len() as u64, Ordering::Relaxed);
        answer_group(conns, &caller, by, lookups).await;
    }
}

async fn answer_group(conns: &Conns, caller: &Caller, by: By, lookups: Vec<Lookup>) {
    // The callers of each key: the same contact may be asked for twice.
    let mut waiting: Waiting = HashMap::new();
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

type Waiting = HashMap<String, Vec<oneshot::Sender<Found>>>;

/// Sends each caller its contact from the batch's rows.
fn deliver(by: By, rows: &[PgRow], mut waiting: Waiting) {
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

fn deliver_error(err: &StoreError, waiting: Waiting) {
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
    conn.finish(rows)
}
