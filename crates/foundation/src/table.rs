//! The node's process table: pid → process, as a sharded slab.
//!
//! A local id is `generation << 32 | index`, where `index` names a slot
//! (`slot * SHARDS + shard`) and `generation` counts the slot's occupants.
//! A stale pid (its process gone, its slot reused) carries an old generation
//! and finds nothing. A slot whose 32-bit generation is used up is retired,
//! so an id is never issued twice in a node incarnation.
//!
//! A slab costs 16 bytes per slot (the `Arc` to the process) and no hashing;
//! freed slots are reused first, newest first. The table keeps the size of
//! its peak number of live processes (plus 8 bytes per free slot), so that
//! every slot keeps its generation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::Pid;
use crate::process::AnyProcess;

/// Number of shards (a power of two). Spawns go round-robin over them so
/// spawns and lookups on different cores rarely meet on one lock.
const SHARDS: usize = 64;

#[derive(Default)]
struct Shard {
    slots: Vec<Option<Arc<dyn AnyProcess>>>,
    /// Free slots and the generation their next occupant gets. (An occupied
    /// slot's generation is in its process's id.)
    free: Vec<(u32, u32)>,
}

pub(crate) struct Table {
    shards: Box<[Mutex<Shard>]>,
    next_shard: AtomicUsize,
}

/// (shard, slot) of a local id.
fn split(id: u64) -> (usize, usize) {
    let index = (id & 0xffff_ffff) as usize;
    (index % SHARDS, index / SHARDS)
}

impl Table {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(), next_shard: AtomicUsize::new(0) }
    }

    /// Processes inserted since the table was made (spawns).
    pub fn inserted(&self) -> u64 {
        self.next_shard.load(Ordering::Relaxed) as u64
    }

    /// Takes a slot, builds the process for its id with `make`, and stores it.
    /// Panics if a shard would pass 2^32 / SHARDS slots (67 million live
    /// processes on one shard): ids could no longer be formed.
    pub fn insert_with<P: AnyProcess>(&self, make: impl FnOnce(u64) -> Arc<P>) -> Arc<P> {
        let shard_no = self.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS;
        let mut shard = self.shards[shard_no].lock();
        let (slot, generation) = match shard.free.pop() {
            Some(free) => free,
            None => {
                let slot = u32::try_from(shard.slots.len()).expect("slot count fits u32");
                shard.slots.push(None);
                (slot, 1)
            }
        };
        let index = u64::from(slot) * SHARDS as u64 + shard_no as u64;
        assert!(index <= u64::from(u32::MAX), "process table full: {index} slots");
        let proc = make(u64::from(generation) << 32 | index);
        shard.slots[slot as usize] = Some(proc.clone());
        proc
    }

    pub fn get(&self, pid: Pid) -> Option<Arc<dyn AnyProcess>> {
        let (shard_no, slot) = split(pid.id());
        let shard = self.shards[shard_no].lock();
        shard.slots.get(slot)?.as_ref().filter(|p| p.local_id() == pid.id()).cloned()
    }

    pub fn remove(&self, pid: Pid) {
        let (shard_no, slot) = split(pid.id());
        let removed = {
            let mut shard = self.shards[shard_no].lock();
            if shard.slots.get(slot).and_then(Option::as_ref).is_none_or(|p| p.local_id() != pid.id()) {
                return;
            }
            let generation = (pid.id() >> 32) as u32;
            // A slot whose generation would wrap is retired, never reused:
            // ids stay unique for the node incarnation's whole life.
            if let Some(next) = generation.checked_add(1) {
                shard.free.push((slot as u32, next));
            }
            shard.slots[slot].take()
        };
        // Dropped outside the shard lock: the last reference may free a mailbox.
        drop(removed);
    }

    /// Every live pid, sorted (so callers iterate in a stable order).
    pub fn pids(&self, node: crate::NodeId) -> Vec<Pid> {
        let mut ids = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            ids.extend(shard.slots.iter().flatten().map(|p| p.local_id()));
        }
        ids.sort_unstable();
        ids.into_iter().map(|id| Pid::new(node, id)).collect()
    }

    /// Releases spare capacity. Slots themselves stay: a slot remembers its
    /// generation (in the free list) so its old pids can never match again.
    pub fn shrink(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.slots.shrink_to_fit();
            shard.free.shrink_to_fit();
        }
    }
}
