//! `MemoryDisk`: the simulator's stand-in for a data directory.

#[allow(clippy::wildcard_imports)] // the store's private pieces (ops, codecs, keys)
use super::*;

/// A disk in memory that outlives the node using it: the simulator's
/// stand-in for a data directory. A node restarted on the same
/// `MemoryDisk` finds its log, vote and snapshot as a node restarted on its
/// data directory would (every write is durable at once, as with fsync).
#[derive(Clone, Default)]
pub struct MemoryDisk {
    tables: Arc<parking_lot::Mutex<Tables>>,
}

#[derive(Default)]
struct Tables {
    log: BTreeMap<u64, Vec<u8>>,
    meta: BTreeMap<&'static str, Vec<u8>>,
}

impl MemoryDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything: a data directory lost while its node was down.
    pub fn wipe(&self) {
        let mut t = self.tables.lock();
        t.log.clear();
        t.meta.clear();
    }

    /// Drops the last `entries` log entries: a disk that lost writes it had
    /// acknowledged. Returns how many were dropped.
    pub fn drop_log_tail(&self, entries: u64) -> u64 {
        let mut t = self.tables.lock();
        let mut dropped = 0;
        while dropped < entries && t.log.pop_last().is_some() {
            dropped += 1;
        }
        dropped
    }

    pub(super) fn apply(&self, ops: &[Op]) {
        let mut t = self.tables.lock();
        for op in ops {
            match op {
                Op::Put(i, bytes) => {
                    t.log.insert(*i, bytes.clone());
                }
                Op::TruncateFrom(i) => {
                    t.log.split_off(i);
                }
                Op::PurgeTo(i) => {
                    t.log = t.log.split_off(&(i + 1));
                }
                Op::Meta(k, v) => {
                    t.meta.insert(k, v.clone());
                }
            }
        }
    }

    pub(super) fn load(&self) -> io::Result<Loaded> {
        let t = self.tables.lock();
        fn meta<T: for<'de> Deserialize<'de>>(t: &Tables, key: &str) -> io::Result<Option<T>> {
            t.meta.get(key).map(|b| decode(b)).transpose()
        }
        Ok(Loaded {
            identity: meta(&t, IDENTITY)?,
            log: t.log.iter().map(|(i, b)| Ok((*i, decode(b)?))).collect::<io::Result<_>>()?,
            vote: meta(&t, VOTE)?,
            committed: meta(&t, COMMITTED)?,
            purged: meta(&t, PURGED)?,
            snapshot: meta(&t, SNAPSHOT)?,
            participants: meta(&t, PARTICIPANTS)?.unwrap_or_default(),
            ..Loaded::default()
        })
    }
}

impl std::fmt::Debug for MemoryDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.tables.lock();
        f.debug_struct("MemoryDisk").field("entries", &t.log.len()).finish()
    }
}
