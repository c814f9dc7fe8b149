//! What a run is doing, slot by slot: what the wall-clock limit names
//! when it fires, and what a live view shows as the nemesis at work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// What a run is doing, by slot (`phase`, `monkey`, ...), with when it
/// started: what a wall-clock limit names when it fires. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Steps(Arc<Mutex<BTreeMap<&'static str, (String, Duration)>>>);

impl Steps {
    pub(super) fn set(&self, slot: &'static str, what: String, at: Duration) {
        self.0.lock().insert(slot, (what, at));
    }

    pub(super) fn clear(&self, slot: &'static str) {
        self.0.lock().remove(slot);
    }

    pub(super) fn get(&self, slot: &'static str) -> Option<(String, Duration)> {
        self.0.lock().get(slot).cloned()
    }

    /// "phase: workload and chaos (since 1.2 s); monkey: ..." or "the
    /// start (no step was recorded)".
    pub(crate) fn describe(&self) -> String {
        let steps = self.0.lock();
        if steps.is_empty() {
            return "the start (no step was recorded)".into();
        }
        let parts: Vec<String> =
            steps.iter().map(|(slot, (what, at))| format!("{slot}: {what} (since {:.1} s)", at.as_secs_f64())).collect();
        parts.join("; ")
    }
}
