//! The search: Wing & Gong's algorithm with Lowe's memoization (as in
//! Porcupine), run per key.

use std::collections::{BTreeMap, HashSet};

use super::history::{HistoryError, Op, OpKind, parse_history};

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
        /// A minimal window around it: the operations concurrent with it and
        /// the last few before it.
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

/// Parses a JSON Lines history and checks it.
pub fn check_history(text: &str) -> Result<CheckResult, HistoryError> {
    Ok(check(&parse_history(text)?))
}

/// Checks operations (any order), key by key.
pub fn check(ops: &[Op]) -> CheckResult {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    let mut states = 0;
    for (key, mut key_ops) in by_key.iter().map(|(k, v)| (*k, v.clone())) {
        key_ops.sort_by_key(|o| (o.call, o.line));
        let (result, explored) = check_key(&key_ops);
        states += explored;
        if let Err(failed) = result {
            let window = window(&key_ops, failed);
            return CheckResult {
                verdict: Verdict::NotLinearizable { key: key.to_owned(), failed: key_ops[failed].clone(), window },
                ops: ops.len(),
                keys: by_key.len(),
                states,
            };
        }
    }
    CheckResult { verdict: Verdict::Linearizable, ops: ops.len(), keys: by_key.len(), states }
}

/// The operations overlapping `failed`, and the three that completed last
/// before it was invoked.
fn window(ops: &[Op], failed: usize) -> Vec<Op> {
    let f = &ops[failed];
    let end = f.ret.unwrap_or(u64::MAX);
    let overlapping = |o: &&Op| o.call <= end && o.ret.is_none_or(|r| r >= f.call);
    let mut before: Vec<&Op> = ops.iter().filter(|o| o.ret.is_some_and(|r| r < f.call)).collect();
    before.sort_by_key(|o| o.ret);
    let mut w: Vec<Op> = before.iter().rev().take(3).rev().map(|o| (*o).clone()).collect();
    w.extend(ops.iter().filter(overlapping).cloned());
    w.sort_by_key(|o| (o.call, o.line));
    w.dedup();
    w
}

/// Applies `kind` to the register's state: `None` if it cannot happen there.
fn step(state: Option<i64>, kind: OpKind) -> Option<Option<i64>> {
    match kind {
        OpKind::Read(v) => (v == state).then_some(state),
        OpKind::Write(v) => Some(v),
        OpKind::Cas(expected, new) => (expected == state).then_some(new),
    }
}

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    call: bool,
    time: u64,
}

/// One key's history: `Err(op index)` if not linearizable.
fn check_key(ops: &[Op]) -> (Result<(), usize>, u64) {
    let n = ops.len();
    // Entries: every call, and the return of every completed operation;
    // calls first at equal times (concurrent, the permissive reading).
    let mut entries: Vec<Entry> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        entries.push(Entry { op: i, call: true, time: op.call });
        if let Some(r) = op.ret {
            entries.push(Entry { op: i, call: false, time: r });
        }
    }
    entries.sort_by_key(|e| (e.time, !e.call, e.op));
    // A doubly linked list over the entries, with a head sentinel at `len`.
    const END: usize = usize::MAX;
    let len = entries.len();
    let head = len;
    let mut next = vec![END; len + 1];
    let mut prev = vec![END; len + 1];
    for i in 0..len {
        next[i] = if i + 1 < len { i + 1 } else { END };
        prev[i] = if i == 0 { head } else { i - 1 };
    }
    next[head] = if len > 0 { 0 } else { END };
    let mut ret_of = vec![END; n];
    for (i, e) in entries.iter().enumerate() {
        if !e.call {
            ret_of[e.op] = i;
        }
    }
    let unlink = |i: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = nx;
        if nx != END {
            prev[nx] = p;
        }
    };
    let relink = |i: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = i;
        if nx != END {
            prev[nx] = i;
        }
    };
    let words = n.div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<i64>)> = Vec::new();
    let mut state: Option<i64> = None;
    let mut remaining = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut explored = 0u64;
    let mut deepest = (0usize, 0usize);
    let mut cursor = next[head];
    while remaining > 0 {
        explored += 1;
        let e = entries[cursor];
        if e.call {
            let op = e.op;
            if let Some(after) = step(state, ops[op].kind) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), after)) {
                    stack.push((cursor, state));
                    state = after;
                    unlink(cursor, &mut next, &mut prev);
                    if ret_of[op] != END {
                        unlink(ret_of[op], &mut next, &mut prev);
                        remaining -= 1;
                    }
                    cursor = next[head];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            cursor = next[cursor];
        } else {
            // An operation returned before any order could place it.
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), e.op);
            }
            let Some((call, before)) = stack.pop() else { return (Err(deepest.1), explored) };
            let op = entries[call].op;
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            if ret_of[op] != END {
                relink(ret_of[op], &mut next, &mut prev);
                remaining += 1;
            }
            relink(call, &mut next, &mut prev);
            cursor = next[call];
        }
    }
    (Ok(()), explored)
}
