//! Wake-ups of the change feed's watchers. A write that recorded changes rings the
//! bell of its tenant after its commit: the watchers of this process wake at once,
//! and where the backend has other replicas to tell (PostgreSQL), the tenant is
//! queued for a NOTIFY that a task of its own sends, outside any write's
//! transaction and coalesced (a burst of commits of one tenant is one NOTIFY).
//! A wake-up only shortens a watcher's wait: watchers poll slowly as well, so a
//! lost notification delays a change, never loses it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use crate::domain::TenantId;

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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

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
