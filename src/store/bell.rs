//! Wake-ups of the change feed's watchers. A write that recorded changes rings the
//! bell of its tenant after its commit: the watchers of this process wake at once,
//! and where the backend has other replicas to tell (PostgreSQL), the tenant is
//! queued for a NOTIFY that a task of its own sends, outside any write's
//! transaction and coalesced (a burst of commits of one tenant is one NOTIFY).
//! A wake-up only shortens a watcher's wait: watchers poll slowly as well, so a
//! lost notification delays a change, never loses it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::{Notify, watch};

use crate::domain::{ChangeKind, ChangePosition, TenantId};
use crate::store::{ChangeBatch, StoreResult};

/// Cheap to clone; clones ring the same bell.
#[derive(Clone, Default)]
pub struct ChangeBell {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// A channel per tenant with watchers in this process; its value counts rings.
    tenants: Mutex<HashMap<TenantId, watch::Sender<u64>>>,
    /// Tenants to announce to the other replicas, and the task that sends them.
    remote: Option<Remote>,
    first_watcher: Notify,
    reads: Arc<SharedReads>,
}

struct Remote {
    pending: Mutex<HashSet<TenantId>>,
    wake: Notify,
}

impl ChangeBell {
    /// A bell of this process only (SQLite: one process writes).
    pub fn local() -> Self {
        Self::default()
    }

    /// A bell that also queues every ring for `next_remote` (PostgreSQL's NOTIFY).
    pub fn with_remote() -> Self {
        Self {
            inner: Arc::new(Inner {
                tenants: Mutex::default(),
                remote: Some(Remote {
                    pending: Mutex::default(),
                    wake: Notify::new(),
                }),
                first_watcher: Notify::new(),
                reads: Arc::default(),
            }),
        }
    }

    /// Changes of `tenant` committed: wakes its watchers here, and queues it for the
    /// other replicas.
    pub fn ring(&self, tenant: &TenantId) {
        self.ring_local(tenant);
        if let Some(remote) = &self.inner.remote {
            lock(&remote.pending).insert(tenant.clone());
            remote.wake.notify_one();
        }
    }

    /// Wakes the watchers of `tenant` in this process (a notification from another
    /// replica, or a commit here).
    pub fn ring_local(&self, tenant: &TenantId) {
        if let Some(sender) = lock(&self.inner.tenants).get(tenant) {
            sender.send_modify(|rings| *rings = rings.wrapping_add(1));
        }
    }

    /// Wakes every watcher of this process (after notifications may have been lost).
    pub fn ring_all_local(&self) {
        for sender in lock(&self.inner.tenants).values() {
            sender.send_modify(|rings| *rings = rings.wrapping_add(1));
        }
    }

    /// A receiver that changes whenever `tenant` rings.
    pub fn subscribe(&self, tenant: &TenantId) -> watch::Receiver<u64> {
        let mut tenants = lock(&self.inner.tenants);
        // Forget tenants whose watchers are all gone, so the map stays as large as
        // the tenants being watched.
        tenants.retain(|_, sender| sender.receiver_count() > 0);
        let receiver = tenants
            .entry(tenant.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        self.inner.first_watcher.notify_waiters();
        receiver
    }

    /// The tenants rung since the last call, once there is at least one; `None` for
    /// a bell without a remote side (it never has any).
    pub async fn next_remote(&self) -> Option<Vec<TenantId>> {
        let remote = self.inner.remote.as_ref()?;
        loop {
            let notified = remote.wake.notified();
            let pending: Vec<TenantId> = lock(&remote.pending).drain().collect();
            if !pending.is_empty() {
                return Some(pending);
            }
            notified.await;
        }
    }

    /// The feed's reads in flight in this process, for watchers to share.
    pub fn shared_reads(&self) -> &Arc<SharedReads> {
        &self.inner.reads
    }

    /// Returns once a watcher of any tenant has subscribed in this process, so a
    /// replica without watchers listens for no one.
    pub async fn watched(&self) {
        loop {
            let notified = self.inner.first_watcher.notified();
            if !lock(&self.inner.tenants).is_empty() {
                return;
            }
            notified.await;
        }
    }
}

/// What a read of the feed asks for: tenant, after which position, which kinds, how
/// many at most.
pub type ReadKey = (TenantId, ChangePosition, Vec<ChangeKind>, u32);
/// A shared read's outcome: `None` when it failed (each reader then reads alone, to
/// report its own error).
pub type SharedBatch = Option<Arc<ChangeBatch>>;

/// Reads of the change feed in flight in this process. Watchers of a tenant that are
/// caught up sit at the same position and wake at the same ring: without sharing,
/// each would run the same statement (100 watchers, 100 statements a commit).
#[derive(Default)]
pub struct SharedReads {
    flights: Mutex<HashMap<ReadKey, Flight>>,
    next: AtomicU64,
}

struct Flight {
    id: u64,
    /// The tenant's ring count when the read started, before its snapshot.
    since: u64,
    read: Shared<BoxFuture<'static, SharedBatch>>,
}

impl SharedReads {
    /// The read `key`, joining one in flight that started at or after ring `seen`
    /// (so its snapshot holds every commit that had rung by then), else starting
    /// `start()` with ring count `now`. Any read's result is a valid prefix of the
    /// feed; joining only decides how fresh it is.
    pub async fn read(
        self: &Arc<Self>,
        key: ReadKey,
        seen: u64,
        now: u64,
        start: impl FnOnce() -> BoxFuture<'static, StoreResult<ChangeBatch>>,
    ) -> SharedBatch {
        let read = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some(flight) if flight.since >= seen => flight.read.clone(),
                _ => {
                    // Reads every waiter left are dropped, so the map holds reads
                    // someone waits for.
                    flights.retain(|_, f| f.read.strong_count().unwrap_or(0) > 1);
                    let id = self.next.fetch_add(1, Ordering::Relaxed);
                    let (reads, done_key, statement) = (Arc::downgrade(self), key.clone(), start());
                    // A task of its own drives the statement to its end: a flight driven
                    // by its waiters stalls when they all go away mid-statement, holding
                    // its connection, and a later watcher joining it waited forever.
                    let flight = tokio::spawn(async move {
                        let batch = statement.await.ok().map(Arc::new);
                        if let Some(reads) = reads.upgrade() {
                            let mut flights = lock(&reads.flights);
                            if flights.get(&done_key).is_some_and(|f| f.id == id) {
                                flights.remove(&done_key);
                            }
                        }
                        batch
                    });
                    let read = async move { flight.await.ok().flatten() }.boxed().shared();
                    flights.insert(
                        key,
                        Flight {
                            id,
                            since: now,
                            read: read.clone(),
                        },
                    );
                    read
                }
            }
        };
        read.await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read joins one in flight that started at or after the ring it saw, and
    /// starts its own otherwise; a finished read is not joined.
    #[tokio::test]
    async fn reads_at_one_position_share_a_statement_started_after_the_ring_they_saw() {
        use std::sync::atomic::AtomicUsize;
        let reads = Arc::new(SharedReads::default());
        let statements = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let start = || {
            let (statements, mut gate) = (statements.clone(), gate.clone());
            move || -> BoxFuture<'static, StoreResult<ChangeBatch>> {
                statements.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Ok(ChangeBatch::default())
                })
            }
        };
        let key: ReadKey = (
            TenantId::parse("a").expect("valid"),
            ChangePosition::START,
            vec![],
            100,
        );
        let leader = tokio::spawn({
            let (reads, key, start) = (reads.clone(), key.clone(), start());
            async move { reads.read(key, 3, 5, start).await }
        });
        tokio::task::yield_now().await;
        while statements.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Saw ring 5: the read started at 5 holds it. Saw ring 6: it may not.
        let joiner = tokio::spawn({
            let (reads, key, start) = (reads.clone(), key.clone(), start());
            async move { reads.read(key, 5, 5, start).await }
        });
        let fresher = tokio::spawn({
            let (reads, key, start) = (reads.clone(), key.clone(), start());
            async move { reads.read(key, 6, 6, start).await }
        });
        while statements.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        release.send(true).expect("gate");
        for read in [leader, joiner, fresher] {
            assert!(read.await.expect("a read").is_some());
        }
        assert_eq!(
            statements.load(Ordering::SeqCst),
            2,
            "the joiner shared the first"
        );
        // Done reads are gone: the next starts its own.
        reads.read(key, 0, 7, start()).await;
        assert_eq!(statements.load(Ordering::SeqCst), 3);
        assert!(lock(&reads.flights).is_empty(), "no read is kept once done");
    }

    /// A flight whose every waiter left mid-statement still runs to its end (its
    /// connection goes back to the pool) and leaves the map; a reader that comes later
    /// starts a read of its own instead of waiting on a flight nobody drives.
    #[tokio::test]
    async fn a_flight_every_waiter_left_runs_to_its_end_and_is_forgotten() {
        use std::sync::atomic::AtomicUsize;
        let reads = Arc::new(SharedReads::default());
        let (started, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (release, gate) = tokio::sync::watch::channel(false);
        let start = || {
            let (started, finished, mut gate) = (started.clone(), finished.clone(), gate.clone());
            move || -> BoxFuture<'static, StoreResult<ChangeBatch>> {
                started.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    let _ = gate.wait_for(|open| *open).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok(ChangeBatch::default())
                })
            }
        };
        let key: ReadKey = (
            TenantId::parse("a").expect("valid"),
            ChangePosition::START,
            vec![],
            100,
        );
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (reads, key, start) = (reads.clone(), key.clone(), start());
                tokio::spawn(async move { reads.read(key, 1, 1, start).await })
            })
            .collect();
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Every waiter goes away mid-statement (a watcher dropped by its client).
        for waiter in &waiters {
            waiter.abort();
        }
        for waiter in waiters {
            assert!(waiter.await.expect_err("aborted").is_cancelled());
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "the three shared one read"
        );
        release.send(true).expect("gate");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while finished.load(Ordering::SeqCst) == 0 || !lock(&reads.flights).is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a flight nobody waits for must still finish and leave the map"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // A later reader at the same position gets an answer from a read of its own.
        let later = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            reads.read(key, 1, 2, start()),
        )
        .await
        .expect("a later reader is answered");
        assert!(later.is_some());
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_ring_wakes_the_tenants_watchers_and_is_queued_once_for_the_remote() {
        let bell = ChangeBell::with_remote();
        let (a, b) = (
            TenantId::parse("a").expect("valid"),
            TenantId::parse("b").expect("valid"),
        );
        let mut watcher = bell.subscribe(&a);
        let other = bell.subscribe(&b);
        bell.ring(&a);
        bell.ring(&a);
        watcher.changed().await.expect("rung");
        assert!(!other.has_changed().expect("open"), "b was not rung");
        assert_eq!(bell.next_remote().await, Some(vec![a]));
        assert_eq!(ChangeBell::local().next_remote().await, None);
    }
}
