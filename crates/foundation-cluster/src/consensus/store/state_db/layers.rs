//! The state as applying sees it: the database as of its last flush,
//! the batch being flushed, and the changes applied since.

#[allow(clippy::wildcard_imports)] // the state database's private pieces
use super::*;

/// Which table a change is to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Which {
    Kv,
    Lock,
    Barrier,
}

/// Changes not yet in the database: a row's new (encoded) value, or its
/// removal.
#[derive(Default)]
pub(super) struct Changes(pub(super) [BTreeMap<String, Option<Vec<u8>>>; 3]);

impl Changes {
    pub(super) fn get(&self, which: Which, key: &str) -> Option<&Option<Vec<u8>>> {
        self.0[which as usize].get(key)
    }

    /// Every change, table by table, in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Which, &String, &Option<Vec<u8>>)> {
        [Which::Kv, Which::Lock, Which::Barrier].into_iter().flat_map(move |w| self.0[w as usize].iter().map(move |(k, v)| (w, k, v)))
    }
}

/// The state as applied: the database as of its last flush (`read`), the
/// batch being flushed, and what was applied since (`active`). Applying
/// writes to `active` only; the state thread writes a full `active` to the
/// database in one transaction, in key order, while applying goes on.
pub(super) struct Layers {
    pub(super) active: Changes,
    pub(super) active_bytes: usize,
    pub(super) flushing: Option<Arc<Changes>>,
    /// `None` once closed, or after a write failed.
    pub(super) read: Option<redb::ReadTransaction>,
    /// The tables of `read`, opened once (none before the first write).
    pub(super) tables: Option<ReadTables>,
    pub(super) applied: Option<LogId>,
    pub(super) membership: Membership,
}

/// Bytes of changes `active` holds before it is flushed: with the batch
/// being flushed, what applying keeps in memory.
pub const FLUSH_BYTES: usize = 16 << 20;

pub(super) fn unusable() -> io::Error {
    io_err("the state database is closed or failed")
}

impl Layers {
    pub(super) fn get(&self, which: Which, key: &str) -> io::Result<Option<Vec<u8>>> {
        if let Some(v) = self.active.get(which, key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.flushing.as_ref().and_then(|f| f.get(which, key)) {
            return Ok(v.clone());
        }
        self.read.as_ref().ok_or_else(unusable)?;
        let Some(t) = &self.tables else { return Ok(None) };
        t.get(which, key)
    }

    /// Reads see `read` from now on.
    pub(super) fn publish(&mut self, read: Option<redb::ReadTransaction>) -> io::Result<()> {
        self.tables = match &read {
            Some(txn) => read_tables(txn)?,
            None => None,
        };
        self.read = read;
        Ok(())
    }

    pub(super) fn set(&mut self, which: Which, key: String, value: Option<Vec<u8>>) {
        self.active_bytes += key.len() + value.as_ref().map_or(0, Vec::len) + 64;
        self.active.0[which as usize].insert(key, value);
    }
}

impl StateRead for Layers {
    type Error = io::Error;
    fn value(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.get(Which::Kv, key)
    }
    fn lock(&self, name: &str) -> io::Result<Option<LockState>> {
        self.get(Which::Lock, name)?.map(|b| decode(&b)).transpose()
    }
    fn arrived(&self, barrier: &str) -> io::Result<BTreeSet<String>> {
        Ok(self.get(Which::Barrier, barrier)?.map(|b| decode(&b)).transpose()?.unwrap_or_default())
    }
}

impl StateWrite for Layers {
    fn set_value(&mut self, key: String, value: Vec<u8>) -> io::Result<()> {
        self.set(Which::Kv, key, Some(value));
        Ok(())
    }
    fn remove_value(&mut self, key: &str) -> io::Result<()> {
        self.set(Which::Kv, key.to_owned(), None);
        Ok(())
    }
    fn set_lock(&mut self, name: String, lock: LockState) -> io::Result<()> {
        self.set(Which::Lock, name, Some(encode(&lock)?));
        Ok(())
    }
    fn remove_lock(&mut self, name: &str) -> io::Result<()> {
        self.set(Which::Lock, name.to_owned(), None);
        Ok(())
    }
    fn set_arrived(&mut self, barrier: String, arrived: BTreeSet<String>) -> io::Result<()> {
        self.set(Which::Barrier, barrier, Some(encode(&arrived)?));
        Ok(())
    }
}
