//! Histories for testing the checker: planted violations in a real history,
//! and simulated linearizable histories of any size.
//!
//! [`plant`] changes one key of a linearizable history so that no order
//! can explain it, in one of the five ways a broken store fails
//! ([`Plant`]). It needs values that one operation writes each (as the
//! kit's workload writes them) so that the change is a violation for
//! certain. [`simulate`] records clients of a correct register, with
//! concurrency and unknown outcomes, for the benches and tests.

use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::history::{Op, OpKind};

/// A way to break a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// A read returns an older write's value, overwritten before the read.
    StaleRead,
    /// An acknowledged write is followed by a read that does not see it.
    LostWrite,
    /// A write's value comes back after a later write replaced it.
    DoubleApply,
    /// A compare-and-set succeeds expecting a value that was gone.
    WrongCas,
    /// A read returns a value that was never written.
    PhantomRead,
}

impl Plant {
    /// Every way.
    pub const ALL: [Plant; 5] = [Plant::StaleRead, Plant::LostWrite, Plant::DoubleApply, Plant::WrongCas, Plant::PhantomRead];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Plant::StaleRead => "stale_read",
            Plant::LostWrite => "lost_write",
            Plant::DoubleApply => "double_apply",
            Plant::WrongCas => "wrong_cas",
            Plant::PhantomRead => "phantom_read",
        }
    }
}

fn written(kind: OpKind) -> Option<Option<i64>> {
    match kind {
        OpKind::Write(v) | OpKind::Cas(_, v) => Some(v),
        OpKind::Read(_) => None,
    }
}

/// Completed operations that write a value exactly one operation writes.
fn unique_writes<'a>(ops: &[&'a Op]) -> Vec<&'a Op> {
    let mut count = std::collections::HashMap::new();
    for op in ops {
        if let Some(v) = written(op.kind) {
            *count.entry(v).or_insert(0) += 1;
        }
    }
    ops.iter().filter(|o| o.ret.is_some() && written(o.kind).is_some_and(|v| v.is_some() && count[&v] == 1)).copied().collect()
}

/// Candidate writes tried per attempt.
const SAMPLE: usize = 256;

/// A completed write of another value than `w`'s that started after `w`
/// returned and returned before `before`.
fn overwrite<'a>(ops: &[&'a Op], w: &Op, before: u64) -> Option<&'a Op> {
    let (wret, v) = (w.ret?, written(w.kind)?);
    ops.iter().find(|y| y.call > wret && y.ret.is_some_and(|r| r < before) && written(y.kind).is_some_and(|u| u != v)).copied()
}

/// `ops` with one violation planted on a key chosen by `seed`, or `None`
/// if the history has no place for this kind (too few operations).
pub fn plant(ops: &[Op], kind: Plant, seed: u64) -> Option<Vec<Op>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut keys: Vec<&str> = ops.iter().map(|o| o.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let process = ops.iter().map(|o| o.process).max().unwrap_or(0) + 1;
    let fresh_value = ops.iter().filter_map(|o| written(o.kind).flatten()).max().unwrap_or(0) + 1;
    let line = ops.iter().map(|o| o.line).max().unwrap_or(0) + 1;
    for _ in 0..64 {
        let key = *keys.choose(&mut rng)?;
        let on_key: Vec<&Op> = ops.iter().filter(|o| o.key == key).collect();
        let unique = unique_writes(&on_key);
        // Candidates are tried from a sample: a scan per candidate stays
        // cheap on a million operations.
        let sample: Vec<&Op> = unique.choose_multiple(&mut rng, SAMPLE).copied().collect();
        let reads: Vec<&Op> = on_key.iter().filter(|o| o.ret.is_some() && matches!(o.kind, OpKind::Read(_))).copied().collect();
        let change = |target: &Op, kind: OpKind| {
            let mut out = ops.to_vec();
            let i = out.iter().position(|o| o == target).expect("from ops");
            out[i].kind = kind;
            out
        };
        let insert = |op: Op| {
            let mut out = ops.to_vec();
            out.push(op);
            out.sort_by_key(|o| (o.call, o.line));
            out
        };
        match kind {
            Plant::PhantomRead => {
                let r = *reads.choose(&mut rng)?;
                return Some(change(r, OpKind::Read(Some(fresh_value))));
            }
            Plant::StaleRead | Plant::WrongCas => {
                let targets: Vec<&Op> = match kind {
                    Plant::StaleRead => reads.clone(),
                    _ => on_key.iter().filter(|o| o.ret.is_some() && matches!(o.kind, OpKind::Cas(..))).copied().collect(),
                };
                let Some(&t) = targets.choose(&mut rng) else { continue };
                let old: Vec<&Op> = sample.iter().filter(|w| overwrite(&on_key, w, t.call).is_some()).copied().collect();
                let Some(w) = old.choose(&mut rng) else { continue };
                let u = written(w.kind)?;
                let kind = match t.kind {
                    OpKind::Cas(_, new) => OpKind::Cas(u, new),
                    _ => OpKind::Read(u),
                };
                return Some(change(t, kind));
            }
            Plant::LostWrite => {
                let by_value: std::collections::HashMap<Option<i64>, &Op> =
                    unique.iter().filter_map(|w| Some((written(w.kind)?, *w))).collect();
                let gaps: Vec<(&Op, &Op)> = reads
                    .iter()
                    .filter_map(|r| {
                        let OpKind::Read(v) = r.kind else { return None };
                        let w = by_value.get(&v)?;
                        (r.call > w.ret? + 2).then_some((*r, *w))
                    })
                    .collect();
                let Some(&(r, w)) = gaps.choose(&mut rng) else { continue };
                let wret = w.ret?;
                let call = rng.random_range(wret + 1..r.call - 1);
                let lost = Op { process, key: key.to_owned(), kind: OpKind::Write(Some(fresh_value)), call, ret: Some(r.call - 1), line };
                return Some(insert(lost));
            }
            Plant::DoubleApply => {
                let pairs: Vec<(&Op, &Op)> = sample.iter().filter_map(|w| Some((*w, overwrite(&on_key, w, u64::MAX)?))).collect();
                let Some(&(w, y)) = pairs.choose(&mut rng) else { continue };
                let at = y.ret? + 1;
                let again = Op { process, key: key.to_owned(), kind: OpKind::Read(written(w.kind)?), call: at, ret: Some(at + 1), line };
                return Some(insert(again));
            }
        }
    }
    None
}

/// A simulated history: `clients` clients of a correct register store on
/// `keys` keys, `ops` operations in all (half reads, 30% writes, 20%
/// compare-and-sets), up to `clients` at a time, a fraction `unknown` of
/// the writes ending in `info` (half of those took effect). Values are
/// unique per write, as the kit's workload writes them.
pub fn simulate(seed: u64, clients: usize, keys: usize, ops: usize, unknown: f64) -> Vec<Op> {
    let mut rng = SmallRng::seed_from_u64(seed);
    struct Pending {
        op: Op,
        at: u64,
        applies: bool,
    }
    let mut pending = Vec::with_capacity(ops);
    let mut clock = vec![0u64; clients.max(1)];
    let mut process: Vec<u64> = (0..clients.max(1) as u64).collect();
    let mut next_value = 1i64;
    let mut last_seen = vec![None; keys.max(1)];
    for i in 0..ops {
        let c = i % clock.len();
        let key_index = rng.random_range(0..keys.max(1));
        let call = clock[c] + rng.random_range(0..50);
        let at = call + rng.random_range(1..100);
        let ret = at + rng.random_range(1..100);
        let roll = rng.random_range(0..10);
        let kind = if roll < 5 {
            OpKind::Read(None)
        } else {
            next_value += 1;
            if roll < 8 { OpKind::Write(Some(next_value)) } else { OpKind::Cas(last_seen[key_index], Some(next_value)) }
        };
        let info = !matches!(kind, OpKind::Read(_)) && rng.random_bool(unknown);
        let op = Op { process: process[c], key: format!("k{key_index}"), kind, call, ret: (!info).then_some(ret), line: i + 1 };
        pending.push(Pending { op, at, applies: !info || rng.random_bool(0.5) });
        clock[c] = ret;
        if info {
            process[c] += clock.len() as u64;
        }
        if let OpKind::Write(v) = kind {
            last_seen[key_index] = v;
        }
    }
    // Apply in the order the operations took effect: reads see that state,
    // compare-and-sets that do not match fail (and are left out).
    pending.sort_by_key(|p| p.at);
    let mut state = vec![None; keys.max(1)];
    let mut out = Vec::with_capacity(ops);
    for mut p in pending {
        let k: usize = p.op.key[1..].parse().unwrap_or(0);
        match p.op.kind {
            OpKind::Read(_) => p.op.kind = OpKind::Read(state[k]),
            OpKind::Write(v) if p.applies => state[k] = v,
            OpKind::Cas(e, v) if p.applies => {
                if e != state[k] {
                    if p.op.ret.is_some() {
                        continue; // a failed compare-and-set did not happen
                    }
                } else {
                    state[k] = v;
                }
            }
            _ => {}
        }
        out.push(p.op);
    }
    out.sort_by_key(|o| (o.call, o.line));
    out
}
