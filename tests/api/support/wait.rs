//! Waiting for a state the test can observe, instead of sleeping and hoping: polls a
//! check until it holds, and fails with what was awaited once a deadline passes. The
//! deadlines are generous, for a loaded 2-core machine: a correct run never gets near
//! them, so they cost nothing but bound a broken one.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long to wait for a state that a correct server reaches in milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, and returns that; panics naming `what` once
/// `within` has passed. Polling, because what is awaited (a pool's usage, a lock's
/// waiters, a metric) offers no event to wait on.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
