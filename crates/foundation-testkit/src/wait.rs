//! Waiting on conditions: the replacement for bare sleeps in tests.

use std::time::Duration;

/// The condition did not hold within the timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("condition was not met within {0:?}")]
pub struct WaitTimeout(pub Duration);

/// Polls `condition` every `interval` until it holds or `timeout` passes.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use foundation_testkit::wait_for_condition;
/// let start = tokio::time::Instant::now();
/// let r = wait_for_condition(|| start.elapsed() > Duration::from_millis(20),
///     Duration::from_secs(1), Duration::from_millis(5)).await;
/// assert!(r.is_ok());
/// # });
/// ```
pub async fn wait_for_condition(mut condition: impl FnMut() -> bool, timeout: Duration, interval: Duration) -> Result<(), WaitTimeout> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitTimeout(timeout));
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
    }
}

/// Panics with `what` unless `condition` holds within `timeout`
/// (checked every 5 ms).
#[track_caller]
pub fn assert_eventually(what: &str, condition: impl FnMut() -> bool, timeout: Duration) -> impl Future<Output = ()> {
    let caller = std::panic::Location::caller();
    async move {
        if wait_for_condition(condition, timeout, Duration::from_millis(5)).await.is_err() {
            panic!("{caller}: condition `{what}` was not met within {timeout:?}");
        }
    }
}
