//! Point reads under a key claim (GetContact, GetContactByEmail), coalesced across
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
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgRow;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::conns::Conns;
use super::{classify, sql, view_from_row};
use crate::domain::ContactView;
use crate::store::{Checked, KeyClaim, StoreError, StoreResult};

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

type Found = StoreResult<Checked<Option<ContactView>>>;

struct Lookup {
    claim: KeyClaim,
    by: By,
    key: String,
    reply: oneshot::Sender<Found>,
}

/// The queue of lookups; its worker ends when the store is dropped.
pub(super) struct Lookups {
    queue: mpsc::UnboundedSender<Lookup>,
}

impl Lookups {
    /// One statement runs at a time, plus up to `spare` more while one is slow, each
    /// holding one connection, so lookups never take the whole pool from the other
    /// calls.
    pub fn start(conns: Conns, spare: usize) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(conns, rx, spare));
        Self { queue }
    }

    /// The contact with this id or email key, if the claim's key is live.
    pub async fn get(&self, claim: &KeyClaim, by: By, key: &str) -> Found {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            claim: claim.clone(),
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

async fn run(conns: Conns, mut queue: mpsc::UnboundedReceiver<Lookup>, spare: usize) {
    let main = Arc::new(Semaphore::new(1));
    let spare = Arc::new(Semaphore::new(spare));
    while let Some(first) = queue.recv().await {
        // Whatever queues while this waits for a slot joins its batch. Batches go
        // one at a time: at 1M contacts a second slot always open halved the lookups
        // per statement and doubled PostgreSQL's CPU per lookup (BENCHMARKS.md). A
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
        tokio::spawn(async move {
            answer(&conns, batch).await;
            drop(slot);
        });
    }
}

/// One statement per key and kind of lookup in the batch (usually one in all).
async fn answer(conns: &Conns, batch: Vec<Lookup>) {
    let mut groups: HashMap<(KeyClaim, By), Vec<Lookup>> = HashMap::new();
    for lookup in batch {
        groups
            .entry((lookup.claim.clone(), lookup.by))
            .or_default()
            .push(lookup);
    }
    for ((claim, by), lookups) in groups {
        answer_group(conns, &claim, by, lookups).await;
    }
}

async fn answer_group(conns: &Conns, claim: &KeyClaim, by: By, lookups: Vec<Lookup>) {
    crate::metrics::record_lookup_batch(lookups.len());
    // The callers of each key: the same contact may be asked for twice.
    let mut waiting: Waiting = HashMap::new();
    for lookup in lookups {
        waiting.entry(lookup.key).or_default().push(lookup.reply);
    }
    let keys: Vec<&str> = waiting.keys().map(String::as_str).collect();
    match fetch(conns, claim, by, &keys).await {
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
                match fetch(conns, claim, by, &keys).await {
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
            let _ = reply.send(Ok(Checked::KeyRejected));
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
                Ok(view) => Ok(Checked::Live(Some(view.clone()))),
                Err(err) => Err(err.duplicate()),
            };
            let _ = reply.send(answer);
        }
        if let Some(reply) = last {
            let _ = reply.send(view.map(|view| Checked::Live(Some(view))));
        }
    }
    for reply in waiting.into_values().flatten() {
        let _ = reply.send(Ok(Checked::Live(None)));
    }
}

fn deliver_error(err: &StoreError, waiting: Waiting) {
    for reply in waiting.into_values().flatten() {
        let _ = reply.send(Err(err.duplicate()));
    }
}

async fn fetch(conns: &Conns, claim: &KeyClaim, by: By, keys: &[&str]) -> StoreResult<Vec<PgRow>> {
    let statement = match by {
        By::Id => sql::GET_CONTACTS_CHECKED,
        By::EmailKey => sql::GET_CONTACTS_BY_EMAIL_CHECKED,
    };
    let mut conn = conns.get().await?;
    let rows = sqlx::query(statement)
        .bind(claim.tenant.as_str())
        .bind(keys)
        .bind(&claim.key_hash[..])
        .fetch_all(&mut *conn)
        .await;
    conn.finish(rows)
}
