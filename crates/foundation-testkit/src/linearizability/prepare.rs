//! Before the search, one key's operations are made finite and the reads
//! that no order can explain are found directly.
//!
//! **Unknown outcomes get a window.** An `info` write or compare-and-set X
//! of value `w` may take effect at any time after its invoke, or never. In
//! any valid order, an X placed after every operation that observes `w`
//! (a read of `w`, a compare-and-set expecting `w`) can be removed: the
//! state right after it is `w`, so the next operation is a write, which
//! does not care. So, without loss, X takes effect before its last
//! observer's return (for an observer of unknown outcome, before that
//! observer's own bound), or not at all. X becomes an *optional* operation
//! with that return; one that nothing observes is dropped. This is what
//! keeps an `info` operation from staying open until the end of the
//! history, which made the search exponential in the number of them.
//!
//! **Impossible reads.** A read (or a compare-and-set's expected value) of
//! `v` needs a write of `v` that no completed write of another value
//! definitely followed before the read was invoked. When every write of `v`
//! was invoked after the read returned, or was overwritten that way, no
//! order explains the read: that is reported at once, whatever the
//! history's shape (a stale read, a lost acknowledged write, a write
//! applied twice, a compare-and-set on a value that was gone, a read of a
//! value never written).

use std::collections::HashMap;

use super::history::{Op, OpKind};

/// An operation as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct SearchOp {
    pub kind: OpKind,
    pub call: u64,
    pub ret: u64,
    /// May also never take effect (an unknown outcome).
    pub optional: bool,
    /// Its index in the key's operations.
    pub origin: usize,
}

/// What preparation found.
pub(super) enum Prepared {
    /// The operations to search, by invoke time.
    Search(Vec<SearchOp>),
    /// Operation `op` (an index in the key's operations) cannot be explained.
    Impossible { op: usize, reason: String },
}

/// Passes of the window computation before it gives up on precision.
const WINDOW_PASSES_MAX: usize = 64;
/// Writers of one value past which the direct read check is skipped (the
/// search still checks the read).
const WRITERS_CHECKED_MAX: usize = 64;

/// The value an operation leaves (writes and compare-and-sets).
fn written(kind: OpKind) -> Option<Option<i64>> {
    match kind {
        OpKind::Write(v) | OpKind::Cas(_, v) => Some(v),
        OpKind::Read(_) => None,
    }
}

/// The value an operation needs to find.
fn observed(kind: OpKind) -> Option<Option<i64>> {
    match kind {
        OpKind::Read(v) | OpKind::Cas(v, _) => Some(v),
        OpKind::Write(_) => None,
    }
}

fn show(v: Option<i64>) -> String {
    v.map_or("null".to_owned(), |v| v.to_string())
}

/// Prepares one key's operations (sorted by invoke time).
pub(super) fn prepare(ops: &[Op]) -> Prepared {
    let mut writers: HashMap<Option<i64>, Vec<usize>> = HashMap::new();
    let mut observers: HashMap<Option<i64>, Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(v) = written(op.kind) {
            writers.entry(v).or_default().push(i);
        }
        if let Some(v) = observed(op.kind) {
            observers.entry(v).or_default().push(i);
        }
    }
    if let Some((op, reason)) = impossible_read(ops, &writers) {
        return Prepared::Impossible { op, reason };
    }
    let bound = info_bounds(ops, &observers);
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        match (op.ret, bound[i]) {
            (Some(ret), _) => out.push(SearchOp { kind: op.kind, call: op.call, ret, optional: false, origin: i }),
            (None, Some(b)) if b >= op.call => {
                out.push(SearchOp { kind: op.kind, call: op.call, ret: b, optional: true, origin: i });
            }
            (None, _) => {} // never observed where it could matter: dropped
        }
    }
    Prepared::Search(out)
}

/// The least fixpoint of `bound(X) = max over observers O of X's value of
/// (O's return if O completed, else bound(O))` over the unknown outcomes;
/// `None` for none (and for completed operations).
fn info_bounds(ops: &[Op], observers: &HashMap<Option<i64>, Vec<usize>>) -> Vec<Option<u64>> {
    let mut bound: Vec<Option<u64>> = vec![None; ops.len()];
    let info: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
    for _ in 0..WINDOW_PASSES_MAX {
        let mut changed = false;
        for &x in &info {
            let Some(w) = written(ops[x].kind) else { continue };
            let Some(obs) = observers.get(&w) else { continue };
            let b = obs.iter().filter(|&&o| o != x).filter_map(|&o| ops[o].ret.or(bound[o])).max();
            if b > bound[x] {
                bound[x] = b;
                changed = true;
            }
        }
        if !changed {
            return bound;
        }
    }
    // No fixpoint in time (a long chain of unknown compare-and-sets): every
    // observed unknown outcome stays possible until the end.
    for &x in &info {
        if written(ops[x].kind).is_some_and(|w| observers.contains_key(&w)) {
            bound[x] = Some(u64::MAX);
        }
    }
    bound
}

/// Completed writes sorted by invoke time, with suffix minima of their
/// return times: "did a completed write of a value other than `v` start
/// after `t` and end before `u`?" in O(log n).
struct Overwrites {
    calls: Vec<u64>,
    /// For the writes from index i on: the earliest return and its value.
    best: Vec<(u64, Option<i64>)>,
    /// The earliest return among those of another value than `best`'s.
    other: Vec<u64>,
}

impl Overwrites {
    fn new(ops: &[Op]) -> Self {
        let mut done: Vec<(u64, u64, Option<i64>)> = ops.iter().filter_map(|o| Some((o.call, o.ret?, written(o.kind)?))).collect();
        done.sort_by_key(|d| d.0);
        let n = done.len();
        let mut best = vec![(u64::MAX, None); n + 1];
        let mut other = vec![u64::MAX; n + 1];
        for i in (0..n).rev() {
            let (_, ret, v) = done[i];
            let ((m1, v1), m2) = (best[i + 1], other[i + 1]);
            (best[i], other[i]) = match (ret < m1, v == v1) {
                (true, true) => ((ret, v), m2),
                // The old minimum has another value than the new one.
                (true, false) => ((ret, v), m1),
                (false, false) => ((m1, v1), m2.min(ret)),
                (false, true) => ((m1, v1), m2),
            };
        }
        Self { calls: done.iter().map(|d| d.0).collect(), best, other }
    }

    /// The earliest return of a completed write of a value other than `v`
    /// invoked strictly after `after` (`None`: any invoke time).
    fn earliest_other(&self, after: Option<u64>, v: Option<i64>) -> u64 {
        let i = after.map_or(0, |t| self.calls.partition_point(|&c| c <= t));
        if self.best[i].0 == u64::MAX {
            return u64::MAX;
        }
        if self.best[i].1 != v { self.best[i].0 } else { self.other[i] }
    }
}

/// The first completed operation whose observed value no write can supply.
fn impossible_read(ops: &[Op], writers: &HashMap<Option<i64>, Vec<usize>>) -> Option<(usize, String)> {
    let over = Overwrites::new(ops);
    let none = Vec::new();
    for (r, op) in ops.iter().enumerate() {
        let (Some(ret), Some(v)) = (op.ret, observed(op.kind)) else { continue };
        let ws = writers.get(&v).unwrap_or(&none);
        if ws.len() > WRITERS_CHECKED_MAX {
            continue;
        }
        // The initial (absent) value is written before everything.
        let initial_lives = v.is_none() && over.earliest_other(None, v) >= op.call;
        if initial_lives {
            continue;
        }
        let lives =
            |&w: &usize| w != r && ops[w].call <= ret && ops[w].ret.is_none_or(|wret| over.earliest_other(Some(wret), v) >= op.call);
        if ws.iter().any(lives) {
            continue;
        }
        let what = match op.kind {
            OpKind::Cas(..) => format!("a compare-and-set that found {}", show(v)),
            _ => format!("a read of {}", show(v)),
        };
        let reason = if ws.iter().all(|&w| w == r || ops[w].call > ret) && v.is_some() {
            format!("{what}, a value no operation invoked before it returned writes")
        } else {
            format!("{what}, but every write of {} was overwritten by a completed write before it was invoked", show(v))
        };
        return Some((r, reason));
    }
    None
}
