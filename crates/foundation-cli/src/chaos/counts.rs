//! The report's operation counts: the KV workload's reads, writes and
//! compare-and-sets (keys `k0`, `k1`, ...). They add up, and agree with
//! the history line by line:
//!
//! | category | what it is | in the history |
//! |---|---|---|
//! | `ok` | happened: a read, a write, a compare-and-set that matched | `ok` |
//! | `cas_mismatch` | a compare-and-set the cluster ran that found another value: it changed nothing | `fail` |
//! | `failed` | certainly did not happen (no quorum, no leader, a refused call) | `fail` |
//! | `unknown` | may or may not have happened (a timeout, a connection lost while the call was out) | `info` |
//!
//! `total` is their sum, one per `invoke` (the final read of each key after
//! the heal included). `checked` is what `foundation check` counts: every
//! operation of the history that may have taken effect (`ok` and
//! `unknown`), the configuration and registry operations (keys `config/…`
//! and `registry/…`) included; a `fail` changed nothing, so the checker
//! leaves it out.

use foundation_testkit::recorder::EventType;
use foundation_testkit::scenario::ChaosOutcome;
use serde::Serialize;

/// KV operations by outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Operations {
    /// Happened.
    pub ok: usize,
    /// Compare-and-sets that ran and found another value (changed nothing).
    pub cas_mismatch: usize,
    /// Did not happen.
    pub failed: usize,
    /// Unknown.
    pub unknown: usize,
    /// All: `ok + cas_mismatch + failed + unknown`.
    pub total: usize,
    /// What the linearizability check counted: the `ok` and `unknown`
    /// operations of the whole history (services' included).
    pub checked: usize,
}

/// The counts of a run. The KV workload's samples count a compare-and-set
/// that found another value as answered (`Outcome::Ok`, for the success
/// rate) while the history records it as `fail`, like a refused operation
/// (`Outcome::Failed`): the `fail` events beyond the refused operations are
/// the mismatches.
pub fn operations(o: &ChaosOutcome) -> Operations {
    let w = &o.workload;
    let fails = w.history.events().iter().filter(|e| e.kind == EventType::Fail && is_kv_key(&e.key)).count();
    let cas_mismatch = fails.saturating_sub(w.failed());
    let ok = w.ok().saturating_sub(cas_mismatch);
    debug_assert_eq!(ok + cas_mismatch + w.failed() + w.unknown(), w.total(), "every operation is in one category");
    Operations { ok, cas_mismatch, failed: w.failed(), unknown: w.unknown(), total: w.total(), checked: o.check.ops }
}

/// The KV workload's keys: `k` and a number (the services' keys have a
/// `/`).
pub fn is_kv_key(key: &str) -> bool {
    key.strip_prefix('k').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `4791 = 4054 ok + 718 cas mismatch + 10 failed + 9 unknown`.
pub fn line(ops: &Operations) -> String {
    format!("{} = {} ok + {} cas mismatch + {} failed + {} unknown", ops.total, ops.ok, ops.cas_mismatch, ops.failed, ops.unknown)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kv_keys_are_k_and_a_number() {
        for (key, kv) in [("k0", true), ("k12", true), ("k", false), ("kx", false), ("config/k1", false), ("registry/a", false)] {
            assert_eq!(super::is_kv_key(key), kv, "{key}");
        }
    }
}
