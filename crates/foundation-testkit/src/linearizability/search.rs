//! The search: Wing & Gong's algorithm with Lowe's memoization (as in
//! Porcupine), over one key's prepared operations, within limits.
//!
//! Entries are every operation's call and return, by time (calls first at
//! equal times: concurrent, the permissive reading), in a doubly linked
//! list. The search walks the list from its head: at a call it tries to
//! take the operation effect now (and restarts from the head); at the
//! return of an operation not yet taken, it backtracks, or, for an
//! optional operation (an unknown outcome), drops it. A state is the set
//! of operations done (taken or dropped) and the register's value; each is
//! entered once, remembered by a 128-bit Zobrist hash (16 bytes, whatever
//! the history's length), so the work after a quiescent point is done once
//! per distinct state reaching it.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use super::history::OpKind;
use super::prepare::SearchOp;

/// Bytes one remembered state costs, with the hash table's spare room.
pub(super) const STATE_BYTES: u64 = 48;

/// Why a search stopped without a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitReached {
    /// The time limit passed.
    Time,
    /// The states to remember would pass the memory limit.
    Memory,
}

/// How a search ended.
pub(super) enum Searched {
    /// An order exists.
    Linearizable,
    /// No order exists; this operation (an index into the search's
    /// operations) is the one the deepest attempt could not place.
    Violation(usize),
    /// A limit was reached while working around this operation.
    Limit(LimitReached, usize),
}

/// What the search may use.
pub(super) struct Budget {
    pub deadline: Instant,
    pub states_max: u64,
    /// States explored, over every key.
    pub explored: u64,
}

/// Applies `kind` to the register's state: `None` if it cannot happen there.
fn step(state: Option<i64>, kind: OpKind) -> Option<Option<i64>> {
    match kind {
        OpKind::Read(v) => (v == state).then_some(state),
        OpKind::Write(v) => Some(v),
        OpKind::Cas(expected, new) => (expected == state).then_some(new),
    }
}

/// SplitMix64: the Zobrist keys and the value hashes.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn zobrist(i: usize) -> u128 {
    let i = i as u64;
    (u128::from(mix(2 * i)) << 64) | u128::from(mix(2 * i + 1))
}

fn value_hash(v: Option<i64>) -> u128 {
    let (tag, x) = v.map_or((1u64, 0u64), |v| (2, v as u64));
    (u128::from(mix(x ^ tag.rotate_left(61))) << 64) | u128::from(mix(!x ^ tag))
}

/// The keys are already uniform hashes: fold them, no more hashing.
#[derive(Default)]
struct Fold(u64);

impl Hasher for Fold {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = (i as u64) ^ ((i >> 64) as u64);
    }
}

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    call: bool,
    time: u64,
}

struct Frame {
    /// The entry of the call that was taken (or of the dropped operation).
    call: usize,
    before: Option<i64>,
    dropped: bool,
}

const END: usize = usize::MAX;

/// The entry list with O(1) unlink and relink (dancing links).
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl Links {
    fn new(len: usize) -> Self {
        let head = len;
        let mut next = vec![END; len + 1];
        let mut prev = vec![END; len + 1];
        for i in 0..len {
            next[i] = if i + 1 < len { i + 1 } else { END };
            prev[i] = if i == 0 { head } else { i - 1 };
        }
        next[head] = if len > 0 { 0 } else { END };
        Self { next, prev, head }
    }
    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        if n != END {
            self.prev[n] = p;
        }
    }
    /// Undoes the matching `unlink` (in reverse order of unlinking).
    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        if n != END {
            self.prev[n] = i;
        }
    }
}

/// Searches for an order of `ops` (sorted by invoke time).
pub(super) fn search(ops: &[SearchOp], budget: &mut Budget) -> Searched {
    let n = ops.len();
    let mut entries: Vec<Entry> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        entries.push(Entry { op: i, call: true, time: op.call });
        entries.push(Entry { op: i, call: false, time: op.ret });
    }
    entries.sort_by_key(|e| (e.time, !e.call, e.op));
    let mut call_of = vec![END; n];
    let mut ret_of = vec![END; n];
    for (i, e) in entries.iter().enumerate() {
        if e.call { call_of[e.op] = i } else { ret_of[e.op] = i }
    }
    let mut links = Links::new(entries.len());
    let mut seen: HashSet<u128, BuildHasherDefault<Fold>> = HashSet::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state: Option<i64> = None;
    let mut done_hash: u128 = 0;
    let mut remaining = n;
    let mut deepest = (0usize, 0usize);
    let mut cursor = links.next[links.head];
    let mut steps = 0u64;
    while remaining > 0 {
        steps += 1;
        if steps.is_multiple_of(4096) && Instant::now() >= budget.deadline {
            return Searched::Limit(LimitReached::Time, deepest.1);
        }
        let e = entries[cursor];
        let op = e.op;
        // Taking the operation now (at its call) or dropping it (at the
        // return of an optional one): a new state, if not seen before.
        let next_state = if e.call { step(state, ops[op].kind) } else { ops[op].optional.then_some(state) };
        if let Some(after) = next_state {
            if seen.len() as u64 >= budget.states_max {
                return Searched::Limit(LimitReached::Memory, deepest.1);
            }
            if seen.insert(done_hash ^ zobrist(op) ^ value_hash(after)) {
                budget.explored += 1;
                stack.push(Frame { call: call_of[op], before: state, dropped: !e.call });
                done_hash ^= zobrist(op);
                state = after;
                links.unlink(call_of[op]);
                links.unlink(ret_of[op]);
                remaining -= 1;
                cursor = links.next[links.head];
                continue;
            }
        }
        if e.call {
            cursor = links.next[cursor];
            continue;
        }
        // A return reached before any order could place its operation.
        if stack.len() >= deepest.0 {
            deepest = (stack.len(), op);
        }
        loop {
            let Some(f) = stack.pop() else { return Searched::Violation(deepest.1) };
            let op = entries[f.call].op;
            state = f.before;
            done_hash ^= zobrist(op);
            links.relink(ret_of[op]);
            links.relink(f.call);
            remaining += 1;
            // Dropping had no alternative at that point: back up further.
            if !f.dropped {
                cursor = links.next[f.call];
                break;
            }
        }
    }
    Searched::Linearizable
}
