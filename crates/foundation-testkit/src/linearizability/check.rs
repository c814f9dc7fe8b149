//! The checker: key by key (P-compositionality), each key prepared
//! ([`super::prepare`]) then searched ([`super::search`]) within
//! [`Limits`]. It always answers: linearizable, not (with the operation and
//! a window around it), or unknown (with the limit and the window it was
//! working on).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use super::history::{HistoryError, Op, parse_history};
use super::prepare::{Prepared, prepare};
use super::search::{Budget, LimitReached, STATE_BYTES, Searched, search};

/// What one check may use. Past either limit the verdict is
/// [`Verdict::Unknown`]; the checker never runs on or grows past them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Memory for the search's remembered states (the parsed history comes
    /// on top: about 100 bytes per operation).
    pub memory_bytes: u64,
    /// Time for the whole check.
    pub time: Duration,
}

impl Limits {
    /// 1 GiB and 60 s.
    pub const DEFAULT: Limits = Limits { memory_bytes: 1 << 30, time: Duration::from_secs(60) };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which limit ended a check without a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The time limit.
    Time(Duration),
    /// The memory limit (bytes).
    Memory(u64),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Time(t) => write!(f, "the time limit of {t:?} was reached"),
            Limit::Memory(b) => write!(f, "the memory limit of {} MiB was reached", b >> 20),
        }
    }
}

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, each taking effect between its invoke
    /// and its completion, explains every result.
    Linearizable,
    /// No such order exists for `key`.
    NotLinearizable {
        /// The key whose history fails.
        key: String,
        /// The operation whose result no order could explain (at the
        /// search's deepest point).
        failed: Op,
        /// Why, in words.
        reason: String,
        /// A minimal window around it: the operations concurrent with it and
        /// the last few before it.
        window: Vec<Op>,
    },
    /// A limit was reached before a verdict on `key` (every other key was
    /// checked: none of them is known to fail).
    Unknown {
        /// The key being checked.
        key: String,
        /// The limit reached.
        limit: Limit,
        /// The operations around the search's frontier when it stopped.
        window: Vec<Op>,
    },
}

/// A verdict and how much work it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The verdict.
    pub verdict: Verdict,
    /// Operations checked (failed ones are not operations).
    pub ops: usize,
    /// Keys (checked independently).
    pub keys: usize,
    /// Search states explored.
    pub states: u64,
}

/// Parses a JSON Lines history and checks it within [`Limits::DEFAULT`].
pub fn check_history(text: &str) -> Result<CheckResult, HistoryError> {
    Ok(check(&parse_history(text)?))
}

/// Checks operations (any order), key by key, within [`Limits::DEFAULT`].
pub fn check(ops: &[Op]) -> CheckResult {
    check_with(ops, Limits::DEFAULT)
}

/// Checks operations (any order), key by key, within `limits`. A key that
/// fails ends the check; a key that reaches a limit is remembered while the
/// others are checked, since a definite failure elsewhere says more.
pub fn check_with(ops: &[Op], limits: Limits) -> CheckResult {
    let started = Instant::now();
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys = by_key.len();
    let mut budget = Budget { deadline: started + limits.time, states_max: (limits.memory_bytes / STATE_BYTES).max(1), explored: 0 };
    let mut unknown = None;
    for (key, key_ops) in by_key {
        let mut key_ops: Vec<Op> = key_ops.into_iter().cloned().collect();
        key_ops.sort_by_key(|o| (o.call, o.line));
        let verdict = check_key(key, &key_ops, &mut budget, limits);
        match verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { .. } => {
                return CheckResult { verdict, ops: ops.len(), keys, states: budget.explored };
            }
            Verdict::Unknown { .. } => {
                unknown.get_or_insert(verdict);
            }
        }
    }
    CheckResult { verdict: unknown.unwrap_or(Verdict::Linearizable), ops: ops.len(), keys, states: budget.explored }
}

fn check_key(key: &str, ops: &[Op], budget: &mut Budget, limits: Limits) -> Verdict {
    let search_ops = match prepare(ops) {
        Prepared::Impossible { op, reason } => {
            return Verdict::NotLinearizable { key: key.to_owned(), failed: ops[op].clone(), reason, window: window(ops, op) };
        }
        Prepared::Search(s) => s,
    };
    match search(&search_ops, budget) {
        Searched::Linearizable => Verdict::Linearizable,
        Searched::Violation(i) => {
            let op = search_ops[i].origin;
            Verdict::NotLinearizable {
                key: key.to_owned(),
                failed: ops[op].clone(),
                reason: "no order of the operations around it explains its result".into(),
                window: window(ops, op),
            }
        }
        Searched::Limit(reached, i) => {
            let limit = match reached {
                LimitReached::Time => Limit::Time(limits.time),
                LimitReached::Memory => Limit::Memory(limits.memory_bytes),
            };
            let op = search_ops.get(i).map_or(0, |o| o.origin);
            Verdict::Unknown { key: key.to_owned(), limit, window: window(ops, op) }
        }
    }
}

/// Operations shown around a failure, at most.
const WINDOW_MAX: usize = 40;

/// The operations overlapping `failed`, and the three that completed last
/// before it was invoked (at most [`WINDOW_MAX`], nearest first kept).
fn window(ops: &[Op], failed: usize) -> Vec<Op> {
    let Some(f) = ops.get(failed) else { return Vec::new() };
    let end = f.ret.unwrap_or(u64::MAX);
    let overlapping = |o: &&Op| o.call <= end && o.ret.is_none_or(|r| r >= f.call);
    let mut before: Vec<&Op> = ops.iter().filter(|o| o.ret.is_some_and(|r| r < f.call)).collect();
    before.sort_by_key(|o| o.ret);
    let mut w: Vec<Op> = before.iter().rev().take(3).rev().map(|o| (*o).clone()).collect();
    let mut around: Vec<&Op> = ops.iter().filter(overlapping).collect();
    // Long-open operations (unknown outcomes) overlap everything: keep the
    // ones invoked nearest the failure.
    around.sort_by_key(|o| o.call.abs_diff(f.call));
    around.truncate(WINDOW_MAX - w.len());
    w.extend(around.into_iter().cloned());
    if !w.contains(f) {
        w.push(f.clone());
    }
    w.sort_by_key(|o| (o.call, o.line));
    w.dedup();
    w
}
