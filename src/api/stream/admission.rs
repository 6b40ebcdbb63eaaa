//! How many streams are open, in all and per tenant. A stream holds its tasks, its
//! read-ahead and a share of the database for as long as its client keeps it open,
//! however slowly that client reads; past either limit a new stream is refused
//! before any work, with a delay to retry after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::ApiError;
use crate::domain::TenantId;

/// When a refused client should try again: streams end as their clients read them,
/// so a place is likely free soon, but there is no knowing when.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Counts the open streams against `--max-streams` and `--max-streams-per-tenant`.
pub(super) struct Admission {
    max: u32,
    max_per_tenant: u32,
    open: Mutex<Open>,
}

/// Only tenants with a stream open have an entry, so the map holds at most `max`.
#[derive(Default)]
struct Open {
    total: u32,
    per_tenant: HashMap<TenantId, u32>,
}

impl Admission {
    pub fn new(max: u32, max_per_tenant: u32) -> Arc<Self> {
        Arc::new(Self {
            max,
            max_per_tenant,
            open: Mutex::default(),
        })
    }

    /// A place for one more stream of `tenant`, held until the permit is dropped;
    /// RESOURCE_EXHAUSTED with `RetryInfo` when either limit is reached.
    pub fn admit(self: &Arc<Self>, tenant: &TenantId) -> Result<StreamPermit, ApiError> {
        let mut open = self.lock();
        let tenant_open = open.per_tenant.get(tenant).copied().unwrap_or(0);
        if open.total >= self.max || tenant_open >= self.max_per_tenant {
            tracing::debug!(
                open = open.total,
                tenant_open,
                "stream refused: too many streams open"
            );
            return Err(ApiError::RateLimited {
                retry_after: RETRY_AFTER,
            });
        }
        open.total += 1;
        open.per_tenant.insert(tenant.clone(), tenant_open + 1);
        Ok(StreamPermit {
            admission: self.clone(),
            tenant: tenant.clone(),
        })
    }

    fn release(&self, tenant: &TenantId) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        match open.per_tenant.get_mut(tenant) {
            Some(count) if *count > 1 => *count -= 1,
            _ => {
                open.per_tenant.remove(tenant);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// One open stream's place; the stream's task holds it, so it is given back when the
/// stream ends, whatever ends it.
pub(super) struct StreamPermit {
    admission: Arc<Admission>,
    tenant: TenantId,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.admission.release(&self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).expect("a valid tenant")
    }

    #[test]
    fn each_limit_refuses_the_stream_past_it_and_a_dropped_permit_makes_room() {
        let admission = Admission::new(3, 2);
        let (a, b, c) = (tenant("a"), tenant("b"), tenant("c"));
        let a1 = admission.admit(&a).expect("a's first");
        let _a2 = admission.admit(&a).expect("a's second");
        assert!(
            admission.admit(&a).is_err(),
            "a's third, past the tenant limit"
        );
        let _b1 = admission.admit(&b).expect("b's first");
        let refused = admission
            .admit(&c)
            .map(|_| ())
            .expect_err("past the global limit");
        assert!(
            matches!(refused, ApiError::RateLimited { .. }),
            "{refused:?}"
        );
        drop(a1);
        admission.admit(&a).expect("a's place given back");
    }

    #[test]
    fn a_tenant_without_open_streams_has_no_entry() {
        let admission = Admission::new(10, 10);
        let permits: Vec<_> = ["a", "b", "a"]
            .into_iter()
            .map(|name| admission.admit(&tenant(name)).expect("admitted"))
            .collect();
        assert_eq!(admission.lock().per_tenant.len(), 2);
        drop(permits);
        let open = admission.lock();
        assert_eq!((open.total, open.per_tenant.len()), (0, 0));
    }
}
