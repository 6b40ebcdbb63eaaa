//! Token buckets: each tenant's rate limit (off unless configured), and each peer's
//! budget of lookups of unknown keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ApiError;
use crate::domain::TenantId;

/// Buckets kept before full (idle) ones are forgotten; a forgotten bucket is full anyway.
const PRUNE_AT: usize = 10_000;

/// Token buckets, one per key (a tenant, a peer address): `burst` calls at once,
/// refilled at `per_second`. Bounded: past `PRUNE_AT` keys, full buckets are dropped.
pub struct RateLimiter<K = TenantId> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `None` when `per_second` is unset or zero: no limit. `burst` defaults to the rate.
    pub fn from_config(per_second: Option<u32>, burst: Option<u32>) -> Option<Arc<Self>> {
        let per_second = per_second.filter(|&rate| rate > 0)?;
        Some(Self::new(per_second, burst.unwrap_or(per_second)))
    }

    /// A limit of `per_second` (at least 1) with `burst` at once (at least 1).
    pub fn new(per_second: u32, burst: u32) -> Arc<Self> {
        Arc::new(Self {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a token of `key`'s bucket, or says how long until one is there.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        self.check_at(key, Instant::now())
            .map_err(|retry_after| ApiError::RateLimited { retry_after })
    }

    fn check_at(&self, tenant: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(tenant) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, bucket| bucket.level(now, rate, burst) < burst);
        }
        let bucket = buckets.entry(tenant.clone()).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        bucket.tokens = bucket.level(now, self.per_second, self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.per_second;
        // Whole milliseconds, rounded up, so a retry at `retry_after` finds a token.
        Err(Duration::from_millis((wait * 1000.0).ceil() as u64))
    }
}

impl Bucket {
    fn level(&self, now: Instant, per_second: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        (self.tokens + elapsed * per_second).min(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).expect("valid tenant")
    }

    #[test]
    fn a_burst_passes_then_calls_wait_for_the_refill() {
        let limiter = RateLimiter::<TenantId>::from_config(Some(10), Some(3)).expect("configured");
        let start = Instant::now();
        let a = tenant("a");
        for i in 0..3 {
            assert_eq!(limiter.check_at(&a, start), Ok(()), "call {i} of the burst");
        }
        let wait = limiter.check_at(&a, start).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(100), "one token every 100ms");
        assert_eq!(limiter.check_at(&a, start + wait), Ok(()), "refilled");
        assert!(limiter.check_at(&a, start + wait).is_err());
    }

    #[test]
    fn tenants_have_separate_buckets() {
        let limiter = RateLimiter::<TenantId>::from_config(Some(1), None).expect("configured");
        let now = Instant::now();
        assert_eq!(limiter.check_at(&tenant("a"), now), Ok(()));
        assert!(limiter.check_at(&tenant("a"), now).is_err());
        assert_eq!(limiter.check_at(&tenant("b"), now), Ok(()), "b is not a");
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_the_burst() {
        let limiter = RateLimiter::<TenantId>::from_config(Some(100), Some(2)).expect("configured");
        let start = Instant::now();
        let a = tenant("a");
        assert_eq!(limiter.check_at(&a, start), Ok(()));
        let later = start + Duration::from_secs(3600);
        assert_eq!(limiter.check_at(&a, later), Ok(()));
        assert_eq!(limiter.check_at(&a, later), Ok(()));
        assert!(
            limiter.check_at(&a, later).is_err(),
            "burst caps the refill"
        );
    }

    #[test]
    fn unset_or_zero_rate_means_no_limiter() {
        assert!(RateLimiter::<TenantId>::from_config(None, Some(5)).is_none());
        assert!(RateLimiter::<TenantId>::from_config(Some(0), None).is_none());
    }
}
