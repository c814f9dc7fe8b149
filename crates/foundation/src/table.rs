//! The node's process table: pid → process, sharded to keep spawns and
//! lookups on different cores from contending on one lock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::Pid;
use crate::process::AnyProcess;

/// Number of shards (a power of two). Ids are sequential, so `id % SHARDS`
/// spreads consecutive spawns over all shards.
const SHARDS: usize = 64;

/// Hashes the (already unique) local id with one multiply.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = (id / SHARDS as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Shard = HashMap<u64, Arc<dyn AnyProcess>, BuildHasherDefault<IdHasher>>;

pub(crate) struct Table {
    shards: Box<[Mutex<Shard>]>,
}

impl Table {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect() }
    }

    fn shard(&self, id: u64) -> &Mutex<Shard> {
        &self.shards[(id as usize) & (SHARDS - 1)]
    }

    pub fn insert(&self, pid: Pid, proc: Arc<dyn AnyProcess>) {
        let prev = self.shard(pid.id()).lock().insert(pid.id(), proc);
        debug_assert!(prev.is_none(), "local ids are never reused");
    }

    pub fn get(&self, pid: Pid) -> Option<Arc<dyn AnyProcess>> {
        self.shard(pid.id()).lock().get(&pid.id()).cloned()
    }

    pub fn remove(&self, pid: Pid) {
        let removed = self.shard(pid.id()).lock().remove(&pid.id());
        // Dropped outside the shard lock: the last reference may free a mailbox.
        drop(removed);
    }

    /// Every live pid, sorted (so callers iterate in a stable order).
    pub fn pids(&self, node: crate::NodeId) -> Vec<Pid> {
        let mut ids: Vec<u64> = self.shards.iter().flat_map(|s| s.lock().keys().copied().collect::<Vec<_>>()).collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| Pid::new(node, id)).collect()
    }

    /// Releases memory the shards grew into and no longer use.
    pub fn shrink(&self) {
        for s in self.shards.iter() {
            s.lock().shrink_to_fit();
        }
    }
}
