//! CPU load and timer lateness, for tests and benches of scheduling.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Burns about `micros` µs of CPU without yielding (not optimised away).
pub fn burn(micros: u64) -> u64 {
    let start = std::time::Instant::now();
    let mut x = 1u64;
    while start.elapsed() < Duration::from_micros(micros) {
        for _ in 0..100 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

/// Runs a 1 ms ticker for `ticks` ticks and returns how late each tick was.
/// `started` fires after the first tick, so load can begin once it ticks.
pub async fn tick_lateness(ticks: usize, started: oneshot::Sender<()>) -> Vec<Duration> {
    let mut lateness = Vec::with_capacity(ticks);
    let mut started = Some(started);
    let mut next = Instant::now() + Duration::from_millis(1);
    for _ in 0..ticks {
        tokio::time::sleep_until(next).await;
        lateness.push(Instant::now().saturating_duration_since(next));
        next += Duration::from_millis(1);
        if let Some(s) = started.take() {
            let _ = s.send(());
        }
    }
    lateness
}

/// The 99th percentile of `samples` (sorted in place).
pub fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() * 99 / 100]
}
