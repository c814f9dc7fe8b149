//! Raft storage: the log (with the vote and the commit point) and the
//! key/value state machine, in memory or durable on disk.
//!
//! # Durability
//! With a data directory, everything Raft must not forget goes to an
//! append-only file (`raft.log`, [`log_file`]): log entries, the vote, the
//! commit point and the purge point. Writes go to one writer thread that
//! takes every request waiting and writes them in one write and one fsync:
//! group commit. `append` reports completion through Raft's `IOFlushed`
//! callback once its write is durable; the vote, truncation and purge wait
//! for theirs. The newest entries are also kept in memory, at most
//! [`LOG_CACHE_BYTES`] of those already durable; older ones are read back
//! from the file (on its writer thread) when a lagging follower needs
//! them. A start reads the file once, keeping each live entry's offset.
//!
//! The state machine lives in `state.redb` ([`state_db`]), its snapshots
//! are files in `snapshots/`. Without a data directory, the log and the
//! state are in memory (on a [`MemoryDisk`] in simulation).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use openraft::alias::{EntryOf, LogIdOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, LogState, RaftLogReader, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot};

mod log_disk;
mod log_file;
mod memory;
mod migrate;
mod participants;
pub(crate) mod snapshot;
mod state_db;
mod state_machine;

use log_disk::{Disk, Done, Loaded, Msg, Op, Request};
pub use memory::MemoryDisk;
pub use participants::Participants;
use snapshot::Meta as SnapshotMeta;
pub use snapshot::SnapshotData;
pub(crate) use state_db::Staging;
use state_db::StateDb;
use state_machine::{Backend, SmInner};
pub use state_machine::{CHANGES_BUFFER, StateMachine};

use super::disk_faults::DiskFaults;
use super::types::{Answer, Applied, Command, Query, State, TypeConfig};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";
const SNAPSHOT: &str = "snapshot";
/// Whose database this is: the cluster and the member id, written with
/// the first write, next to the vote and the log.
const IDENTITY: &str = "identity";
/// The peers whose answers this member has taken ([`Participants`]).
const PARTICIPANTS: &str = "participants";
/// Requests waiting for the writer thread.
const DISK_QUEUE: usize = 4096;
/// Durable log entries kept in memory (the newest), besides those not yet
/// durable.
pub const LOG_CACHE_BYTES: usize = 32 << 20;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;
/// What a log entry carries.
type Payload = EntryPayload<Command, super::types::NodeId, super::types::Member>;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(io_err)
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> io::Result<T> {
    postcard::from_bytes(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt record: {e}")))
}

struct LogInner {
    /// The newest entries, from `cached_from` on (all of them without a
    /// database to read older ones from).
    log: BTreeMap<u64, Entry>,
    cached_from: u64,
    cached_bytes: usize,
    /// The last entry (in the cache or, after a start, on disk).
    last: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    disk: Option<Disk>,
}

/// The Raft log. Cheap to clone (a reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    participants: Participants,
}

impl LogStore {
    /// Whose answers this member has taken.
    pub fn participants(&self) -> Participants {
        self.participants.clone()
    }
}

/// A snapshot as kept (and persisted): its metadata and the encoded state.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Where a consensus member keeps its log, vote and snapshots.
#[derive(Clone, Default)]
pub enum Storage {
    /// In this node's memory only: lost when it stops.
    #[default]
    Memory,
    /// Durable in a data directory (the log's file and the state's redb
    /// database).
    Dir(PathBuf),
    /// On a [`MemoryDisk`] that outlives the node (simulated restarts).
    Disk(MemoryDisk),
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Dir(d) => f.debug_tuple("Dir").field(d).finish(),
            Self::Disk(d) => f.debug_tuple("Disk").field(d).finish(),
        }
    }
}

/// How a store opens: its writes subject to `faults`, a snapshot due
/// after `snapshot_log_bytes` of applied entries, applied key changes sent
/// to `changes`, a failed write reported to `health`; whose it must be
/// (`identity`), and whether the member has run before (`existing`: then
/// an empty store is refused).
#[derive(Clone)]
pub struct OpenOptions {
    /// Whose store it must be.
    pub identity: StoreIdentity,
    /// The member has run before on this storage.
    pub existing: bool,
    /// Injected storage faults.
    pub faults: DiskFaults,
    /// Bytes of applied entries between snapshots.
    pub snapshot_log_bytes: u64,
    /// Keys changed by applied commands (outlives one store: a member that
    /// reopens its storage keeps its watchers).
    pub changes: tokio::sync::broadcast::Sender<String>,
    /// Where a failed write is reported.
    pub health: StorageHealth,
    /// Where snapshot builds are reported
    /// (`foundation.consensus.snapshot_build`), as this member.
    pub telemetry: Option<(crate::services::Telemetry, String)>,
}

/// Whether a store's writes fail: the first failure's reason, kept until
/// the member has reopened its storage. Cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct StorageHealth {
    failed: Arc<parking_lot::Mutex<Option<String>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl StorageHealth {
    /// Why the storage failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().clone()
    }

    pub(crate) fn fail(&self, why: String) {
        let mut failed = self.failed.lock();
        if failed.is_none() {
            *failed = Some(why);
            self.changed.notify_one();
        }
    }

    pub(crate) fn clear(&self) {
        *self.failed.lock() = None;
    }

    /// Waits until a write fails; returns why.
    pub(crate) async fn failed(&self) -> String {
        loop {
            if let Some(why) = self.failure() {
                return why;
            }
            self.changed.notified().await;
        }
    }
}

/// Opens the log and the state machine on `storage` (see [`OpenOptions`]). A corrupt directory is an error, and nothing in it is changed.
pub fn open(storage: &Storage, opts: &OpenOptions) -> io::Result<(LogStore, StateMachine, bool)> {
    let OpenOptions { faults, snapshot_log_bytes, changes, health, identity, existing, telemetry } = opts.clone();
    let identity_op = || -> io::Result<Vec<Op>> { Ok(vec![Op::Meta(IDENTITY, encode(&identity)?)]) };
    let mut sm = SmInner {
        bytes_since_snapshot: 0,
        snapshot_log_bytes,
        last_applied: None,
        membership: StoredMembershipOf::<TypeConfig>::default(),
        backend: Backend::Memory { data: State::default(), snapshot: None, disk: None },
    };
    let (disk, mut loaded, fresh) = match storage {
        Storage::Dir(d) => {
            let (mut file, mut loaded) = Disk::open(d)?;
            let (state, opened) = StateDb::open(d, &identity, faults.clone(), health.clone())?;
            // An install cut short: done again at start, unless it finished.
            let mut pending = state.snapshots.installing()?;
            if pending.as_ref().is_some_and(|(m, _)| m.last_log_id <= opened.applied) {
                pending = None;
                state.snapshots.installed()?;
            }
            loaded.snapshot_index = pending.as_ref().and_then(|(m, _)| m.last_log_id).map(|l| l.index);
            loaded.applied_index = opened.applied.map(|l| l.index);
            let fresh = check_loaded(&loaded, &identity, existing)?;
            if loaded.purged.is_some() && opened.applied.is_none() && pending.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the state database is gone or empty, and the log before {} was purged: the state cannot be rebuilt; \
                         to rejoin, start it with an empty --data-dir and a new --id, and add that id to the group",
                        d.join("state.redb").display(),
                        loaded.purged.map_or(0, |p| p.index + 1)
                    ),
                ));
            }
            if loaded.identity.is_none() {
                file.write(&[Request { ops: identity_op()?, done: Done::Ignore }])?;
            }
            sm.last_applied = opened.applied;
            sm.membership = opened.membership;
            let log = Disk::start(file, loaded.log_last.map(|l| l.index), faults, health)?;
            sm.backend = Backend::Db { db: state, log: log.clone(), pending };
            (Some(log), loaded, fresh)
        }
        Storage::Disk(m) => {
            let mut loaded = m.load()?;
            loaded.snapshot_index = loaded.snapshot.as_ref().and_then(|s| s.meta.last_log_id).map(|l| l.index);
            let fresh = check_loaded(&loaded, &identity, existing)?;
            if loaded.identity.is_none() {
                m.apply(&identity_op()?);
            }
            let disk = Disk::Memory(m.clone(), faults, health);
            let mut data = State::default();
            let mut snapshot = None;
            if let Some(snap) = loaded.snapshot.take() {
                let (meta, state) = snapshot::decode_state(&snap.data)?;
                data = state;
                sm.last_applied = meta.last_log_id;
                sm.membership = meta.last_membership.clone();
                snapshot = Some((meta, Arc::new(snap.data)));
            }
            sm.backend = Backend::Memory { data, snapshot, disk: Some(disk.clone()) };
            (Some(disk), loaded, fresh)
        }
        Storage::Memory => (None, Loaded::default(), true),
    };
    let last = loaded.log.values().next_back().map(RaftEntry::log_id).or(loaded.log_last);
    let mut log = LogInner {
        cached_from: loaded.log.keys().next().copied().unwrap_or_else(|| last.map_or(0, |l| l.index + 1)),
        log: std::mem::take(&mut loaded.log),
        cached_bytes: 0,
        last,
        vote: loaded.vote,
        committed: loaded.committed,
        purged: loaded.purged,
        disk,
    };
    log.recount();
    let (snapshot_due, _) = tokio::sync::watch::channel(0);
    let sm = StateMachine { inner: Arc::new(Mutex::new(sm)), changes, snapshot_due: Arc::new(snapshot_due), telemetry };
    let participants = Participants::new(std::mem::take(&mut loaded.participants), log.disk.clone());
    Ok((LogStore { inner: Arc::new(Mutex::new(log)), participants }, sm, fresh))
}

/// Whose store this is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreIdentity {
    /// The cluster.
    pub cluster_id: String,
    /// The member's id.
    pub id: u64,
}

/// Refuses a store that is not this member's, or that lost what it had
/// acknowledged: Raft's safety rests on never forgetting a vote or an
/// acknowledged entry.
/// Returns whether the store is fresh (no vote, no log, no snapshot).
fn check_loaded(loaded: &Loaded, want: &StoreIdentity, existing: bool) -> io::Result<bool> {
    let fresh = loaded.vote.is_none() && loaded.log.is_empty() && loaded.log_last.is_none() && loaded.snapshot_index.is_none();
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::InvalidData, why));
    if let Some(found) = &loaded.identity
        && found != want
    {
        return refuse(format!(
            "the Raft database belongs to member {} of cluster {:?}, not member {} of {:?}: use this member's own data directory",
            found.id, found.cluster_id, want.id, want.cluster_id
        ));
    }
    // The database carries its identity from its first open: a member that
    // has run before (its data directory says so) finds it there unless the
    // database was lost or emptied.
    if existing && fresh && loaded.identity.is_none() {
        return refuse(format!(
            "the Raft database of member {} is gone or empty, but its data directory shows it has run: it may have voted, and must not vote again under id {}; \
             to rejoin, start it with an empty --data-dir and a new --id, and add that id to the group",
            want.id, want.id
        ));
    }
    let last = loaded.log.keys().next_back().copied().or(loaded.log_last.map(|l| l.index));
    let held = last.max(loaded.snapshot_index).max(loaded.applied_index);
    if let Some(committed) = loaded.committed
        && held.is_none_or(|h| h < committed.index)
    {
        return refuse(format!(
            "the Raft log ends at {held:?} but entries up to {} were committed: it lost writes it had acknowledged; \
             to rejoin, start it with an empty --data-dir and a new --id, and add that id to the group",
            committed.index
        ));
    }
    Ok(fresh)
}

impl LogInner {
    /// The log's writer, which reads entries no longer cached.
    fn reader(&self) -> Option<mpsc::Sender<Msg>> {
        match &self.disk {
            Some(Disk::File(r)) => Some(r.tx.clone()),
            _ => None,
        }
    }

    /// Drops the oldest cached entries that are durable while the cache
    /// holds more than [`LOG_CACHE_BYTES`] (only with a file).
    fn evict(&mut self) {
        let Some(Disk::File(r)) = &self.disk else { return };
        let durable = r.durable.load(Ordering::Acquire);
        while self.cached_bytes > LOG_CACHE_BYTES {
            match self.log.first_key_value() {
                Some((&i, _)) if i < durable => {
                    if let Some(e) = self.log.remove(&i) {
                        self.cached_bytes -= crate::consensus::network::entry_bytes(&e);
                    }
                    self.cached_from = i + 1;
                }
                _ => break,
            }
        }
    }

    fn recount(&mut self) {
        self.cached_bytes = self.log.values().map(crate::consensus::network::entry_bytes).sum();
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(&mut self, range: RB) -> Result<Vec<Entry>, io::Error> {
        use std::ops::Bound;
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i + 1,
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let (older, mut cached) = {
            let inner = self.inner.lock().await;
            let cached: Vec<Entry> =
                inner.log.range(from.max(inner.cached_from)..to.max(inner.cached_from)).map(|(_, e)| e.clone()).collect();
            let older = (from < inner.cached_from).then(|| (inner.reader(), to.min(inner.cached_from)));
            (older, cached)
        };
        let Some((reader, upto)) = older else { return Ok(cached) };
        let Some(writer) = reader else { return Ok(cached) };
        let (tx, rx) = oneshot::channel();
        writer.send(Msg::Read(from, upto, tx)).await.map_err(|_| io_err("the disk writer stopped"))?;
        let mut entries = rx.await.map_err(|_| io_err("the disk writer stopped"))??;
        entries.append(&mut cached);
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.lock().await.vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.inner.lock().await;
        Ok(LogState { last_purged_log_id: inner.purged, last_log_id: inner.last.or(inner.purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let disk = {
            let mut inner = self.inner.lock().await;
            inner.vote = Some(*vote);
            inner.disk.clone()
        };
        match disk {
            Some(d) => d.write(vec![Op::Meta(VOTE, encode(vote)?)]).await,
            None => Ok(()),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let disk = {
            let mut inner = self.inner.lock().await;
            inner.committed = committed;
            inner.disk.clone()
        };
        match (disk, committed) {
            // Not waited for: a lost commit point is recomputed by Raft.
            (Some(d), Some(c)) => d.submit(vec![Op::Meta(COMMITTED, encode(&c)?)], Done::Flushed(IOFlushed::noop())).await,
            _ => Ok(()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().await;
        let mut ops = Vec::new();
        for e in entries {
            if inner.disk.is_some() {
                ops.push(Op::Put(e.index(), encode(&e)?));
            }
            if inner.log.is_empty() {
                inner.cached_from = e.index();
            }
            inner.last = Some(e.log_id);
            inner.cached_bytes += crate::consensus::network::entry_bytes(&e);
            inner.log.insert(e.index(), e);
        }
        inner.evict();
        match inner.disk.clone() {
            Some(d) => {
                drop(inner);
                d.submit(ops, Done::Flushed(callback)).await
            }
            None => {
                callback.io_completed(Ok(()));
                Ok(())
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index() + 1);
        let disk = {
            let mut inner = self.inner.lock().await;
            inner.log.split_off(&from);
            inner.recount();
            inner.cached_from = inner.cached_from.min(from);
            inner.last = last_log_id.or(inner.purged);
            inner.disk.clone()
        };
        match disk {
            Some(d) => d.write(vec![Op::TruncateFrom(from)]).await,
            None => Ok(()),
        }
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let disk = {
            let mut inner = self.inner.lock().await;
            let keep = inner.log.split_off(&(log_id.index() + 1));
            inner.log = keep;
            inner.recount();
            inner.cached_from = inner.cached_from.max(log_id.index() + 1);
            if inner.last.is_none_or(|l| l.index < log_id.index) {
                inner.last = Some(log_id);
            }
            inner.purged = Some(log_id);
            inner.disk.clone()
        };
        match disk {
            Some(d) => d.write(vec![Op::Meta(PURGED, encode(&log_id)?), Op::PurgeTo(log_id.index())]).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        entry_of(index, 200)
    }

    fn entry_of(index: u64, len: usize) -> Entry {
        let leader_id = <openraft::alias::LeaderIdOf<TypeConfig> as openraft::vote::RaftLeaderIdExt>::new_committed(1, 1);
        Entry {
            log_id: openraft::LogId { leader_id, index },
            payload: EntryPayload::Normal(Command::Put { key: format!("k{index:015}"), value: vec![b'v'; len] }),
        }
    }

    fn options() -> OpenOptions {
        let (changes, _) = tokio::sync::broadcast::channel(16);
        OpenOptions {
            identity: StoreIdentity { cluster_id: "c".into(), id: 1 },
            existing: false,
            faults: DiskFaults::new(),
            snapshot_log_bytes: u64::MAX,
            changes,
            health: StorageHealth::default(),
            telemetry: None,
        }
    }

    /// A purge that leaves the log's file mostly free compacts it: 40 MiB
    /// of entries purged to their last ten leave a file of under 10 MiB.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_that_frees_most_of_the_log_compacts_its_file() {
        let dir = std::env::temp_dir().join(format!("foundation-log-compact-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut log, sm, _) = open(&Storage::Dir(dir.clone()), &options()).unwrap();
        for i in (1..=2_560u64).step_by(10) {
            log.append((i..i + 10).map(|i| entry_of(i, 16 << 10)), IOFlushed::noop()).await.unwrap();
        }
        log.save_vote(&VoteOf::<TypeConfig>::new_committed(1, 1)).await.unwrap();
        let size = || std::fs::metadata(dir.join("raft.log")).unwrap().len();
        let before = size();
        log.purge(entry(2_550).log_id).await.unwrap();
        let after = size();
        // What is left is still read back.
        let left = log.try_get_log_entries(2_551..=2_560).await.unwrap();
        sm.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
        // After: what is left, and the room kept ahead in zeros (8 MiB).
        assert!(before > 40 << 20 && after < 10 << 20, "raft.log: {} KiB before the purge, {} KiB after", before >> 10, after >> 10);
        assert_eq!(left.len(), 10);
    }

    /// A commit point alone is written with the next write, or at close:
    /// a member reopened finds the last one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_commit_point_is_there_after_a_reopen() {
        let dir = std::env::temp_dir().join(format!("foundation-commit-point-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut log, sm, _) = open(&Storage::Dir(dir.clone()), &options()).unwrap();
        log.append((1..=3).map(entry), IOFlushed::noop()).await.unwrap();
        log.save_committed(Some(entry(2).log_id)).await.unwrap();
        log.append((4..=5).map(entry), IOFlushed::noop()).await.unwrap();
        log.save_committed(Some(entry(4).log_id)).await.unwrap();
        log.save_committed(Some(entry(5).log_id)).await.unwrap();
        sm.close().await;
        drop((log, sm));
        let (mut log, sm, _) = open(&Storage::Dir(dir.clone()), &OpenOptions { existing: true, ..options() }).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(entry(5).log_id));
        assert_eq!(log.try_get_log_entries(1..=5).await.unwrap().len(), 5);
        sm.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A read of a closed state machine is an error, not an empty state:
    /// a member being shut down (a node killed) answered a linearizable
    /// read with "no value" (`big_state`, in process, about one run in
    /// three: "a read of null, but every write of null was overwritten").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_state_machine_refuses_reads() {
        let dir = std::env::temp_dir().join(format!("foundation-closed-reads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for storage in [Storage::Memory, Storage::Dir(dir.clone())] {
            let (_log, sm, _) = open(&storage, &options()).unwrap();
            let get = Query::Get("k".into());
            assert_eq!(sm.query(&get).await.unwrap(), Answer::Value(None), "{storage:?}: open, nothing written");
            sm.close().await;
            let refused = sm.query(&get).await;
            assert!(refused.is_err(), "{storage:?}: a closed state machine answered {refused:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// redb's `retain_in` over the purged range took the file from 9.6 MB
    /// to 234 MB for 20,000 entries of 250 bytes (the 1.3 GB per node the
    /// storage issue measured); removed one at a time, it stays as it was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purging_and_truncating_the_log_do_not_grow_its_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("foundation-log-growth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut log, sm, _) = open(&Storage::Dir(dir.clone()), &options()).unwrap();
        for i in (1..=20_000u64).step_by(10) {
            log.append((i..i + 10).map(entry), IOFlushed::noop()).await.unwrap();
            log.save_committed(Some(entry(i + 9).log_id)).await.unwrap();
        }
        // Waits for the appends: the writer takes requests in order.
        log.save_vote(&VoteOf::<TypeConfig>::new_committed(1, 1)).await.unwrap();
        let size = || std::fs::metadata(dir.join("raft.log")).unwrap().blocks() * 512;
        let before = size();
        log.purge(entry(19_000).log_id).await.unwrap();
        log.truncate_after(Some(entry(19_500).log_id)).await.unwrap();
        let after = size();
        sm.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
        // 20,000 entries of about 250 bytes: 5 MB.
        assert!(before < 20 << 20 && after < 20 << 20, "raft.log: {} KiB before, {} KiB after", before >> 10, after >> 10);
    }
}
