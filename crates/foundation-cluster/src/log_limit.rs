//! A bound on repeated log lines: a flood of the same refusal (a peer that
//! dials again and again, a follower that stays behind) must never become
//! unbounded output.
//!
//! A [`LogLimit`] lets through at most `burst` lines per key (e.g. per
//! source address) in each window of `per`; the lines it holds back are
//! counted, and the next line let through for that key says how many were
//! left out. It remembers at most [`LOG_KEYS_MAX`] keys: past that, new
//! keys share one overflow key, so whatever the number of sources, a
//! window holds at most `(LOG_KEYS_MAX + 1) × burst` lines.
//!
//! ```
//! use std::time::Duration;
//! use foundation::rt::Instant;
//! use foundation_cluster::log_limit::LogLimit;
//!
//! let refusals = LogLimit::new(2, Duration::from_secs(10));
//! let now = Instant::now();
//! for _ in 0..5 {
//!     if let Some(left_out) = refusals.check("10.0.0.7:51000", now) {
//!         // tracing::warn!(from = "10.0.0.7:51000", left_out, "refused a connection: ...");
//!         assert_eq!(left_out, 0);
//!     }
//! }
//! // The next window: let through again, saying 3 were left out.
//! assert_eq!(refusals.check("10.0.0.7:51000", now + Duration::from_secs(10)), Some(3));
//! ```
//!
//! Time is the caller's (`Rt::now()`, simulated under the test kit), so a
//! simulated run logs the same lines on every replay.

use std::collections::HashMap;
use std::time::Duration;

use foundation::rt::Instant;

/// Most keys a [`LogLimit`] remembers; later keys share one overflow key.
pub const LOG_KEYS_MAX: usize = 1024;
/// The key that keys beyond [`LOG_KEYS_MAX`] share.
pub const LOG_OVERFLOW_KEY: &str = "(other sources)";

/// Per-key rate limit for one kind of log line. Cheap to share (`&self`).
#[derive(Debug)]
#[must_use]
pub struct LogLimit {
    burst: u32,
    per: Duration,
    windows: parking_lot::Mutex<HashMap<String, Window>>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    left_out: u64,
}

impl LogLimit {
    /// At most `burst` lines per key in each window of `per`.
    ///
    /// # Panics
    /// If `burst` is 0 or `per` is zero (nothing would ever be logged, or
    /// nothing bounded).
    pub fn new(burst: u32, per: Duration) -> Self {
        assert!(burst > 0 && !per.is_zero(), "a log limit lets at least one line through per non-empty window");
        Self { burst, per, windows: parking_lot::Mutex::new(HashMap::new()) }
    }

    /// Whether a line for `key` may be logged at `now`: `Some(n)` to log
    /// it, `n` being how many lines of this key were left out since the
    /// last one logged (put it in the line); `None` to leave it out (it is
    /// counted).
    #[must_use = "log the line only when this says Some"]
    pub fn check(&self, key: &str, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock();
        if !windows.contains_key(key) && windows.len() >= LOG_KEYS_MAX {
            // Forget the keys whose window is over and held nothing back.
            windows.retain(|_, w| now.saturating_duration_since(w.start) < self.per || w.left_out > 0);
        }
        let key = if windows.contains_key(key) || windows.len() < LOG_KEYS_MAX { key } else { LOG_OVERFLOW_KEY };
        let window = windows.entry(key.to_owned()).or_insert(Window { start: now, logged: 0, left_out: 0 });
        if now.saturating_duration_since(window.start) >= self.per {
            window.start = now;
            window.logged = 0;
        }
        if window.logged >= self.burst {
            window.left_out += 1;
            return None;
        }
        window.logged += 1;
        Some(std::mem::take(&mut window.left_out))
    }

    /// How many keys are remembered (at most [`LOG_KEYS_MAX`] + 1).
    pub fn keys(&self) -> usize {
        self.windows.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_per_key_and_the_count_of_the_rest() {
        let limit = LogLimit::new(3, Duration::from_secs(1));
        let t = Instant::now();
        let let_through: Vec<Option<u64>> = (0..10).map(|_| limit.check("a", t)).collect();
        assert_eq!(let_through.iter().filter(|v| v.is_some()).count(), 3);
        assert_eq!(limit.check("b", t), Some(0), "another key has its own window");
        assert_eq!(limit.check("a", t + Duration::from_millis(999)), None, "the window is not over");
        assert_eq!(limit.check("a", t + Duration::from_secs(1)), Some(8), "the next line says how many were left out");
        assert_eq!(limit.check("a", t + Duration::from_secs(1)), Some(0));
    }

    #[test]
    fn a_flood_from_many_sources_stays_bounded() {
        let limit = LogLimit::new(2, Duration::from_secs(60));
        let t = Instant::now();
        // 30,000 sources, each refused three times in a row.
        let sources = (0..30_000).flat_map(|i| [i; 3]);
        let logged = sources.filter(|i| limit.check(&format!("10.0.{}.{}:1", i / 250, i % 250), t).is_some()).count();
        assert!(limit.keys() <= LOG_KEYS_MAX + 1, "{} keys", limit.keys());
        assert_eq!(logged, 2 * LOG_KEYS_MAX + 2, "each remembered key's burst, and the overflow key's");
    }
}
