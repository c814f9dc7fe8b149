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
/// use foundation_testutil::wait_for_condition;
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

/// Panics unless `observe()` gives a value `accept` takes within `timeout`
/// (observed every 5 ms); the panic message shows the last value observed.
#[track_caller]
pub fn assert_eventually_with<T: std::fmt::Debug>(
    what: &str,
    mut observe: impl FnMut() -> T,
    accept: impl Fn(&T) -> bool,
    timeout: Duration,
) -> impl Future<Output = T> {
    let caller = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = observe();
            if accept(&seen) {
                return seen;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{caller}: condition `{what}` was not met within {timeout:?}; last observed: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Panics unless `observe()` equals `expected` within `timeout`; the panic
/// message shows the last value observed.
#[track_caller]
pub fn assert_eventually_eq<T: std::fmt::Debug + PartialEq>(
    what: &str,
    observe: impl FnMut() -> T,
    expected: T,
    timeout: Duration,
) -> impl Future<Output = T> {
    assert_eventually_with(what, observe, move |v| *v == expected, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_reports_the_last_observed_value() {
        let mut n = 0;
        let seen = assert_eventually_eq(
            "counts to 3",
            || {
                n += 1;
                n
            },
            3,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(seen, 3);
        #[allow(clippy::disallowed_methods)] // a leaf crate: no `foundation::rt` here
        let failed = tokio::spawn(assert_eventually_eq("stays 7", || 7, 8, Duration::from_millis(30))).await.expect_err("panics");
        let msg = failed.into_panic().downcast::<String>().map(|s| *s).unwrap_or_default();
        assert!(msg.contains("stays 7") && msg.contains("last observed: 7"), "{msg}");
    }
}
