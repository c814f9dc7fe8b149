//! The state machine in a data directory: `state.redb`, next to the Raft
//! log's `raft.redb`, written by a thread of its own.
//!
//! The state lives in the database (tables `kv`, `locks`, `barriers`), read
//! through redb transactions and its bounded page cache: a member's memory
//! does not grow with its state. What was applied up to (`applied`) and the
//! membership are written in the same transaction as the changes, so the
//! database is always a consistent state at some log index.
//!
//! Applied batches commit without fsync (`Durability::None`: the log they
//! came from is durable, and Raft applies them again after a crash), with a
//! durable commit at least every [`DURABLE_EVERY`] and before every
//! snapshot: a snapshot is a durable state, so the log behind it can go.
//! A snapshot is not a copy: it is a read transaction (redb's MVCC), which
//! applying does not disturb, encoded row by row only when a follower needs
//! it. A snapshot received from the leader is written to a file, then
//! replaces the tables in several transactions under an `installing` mark;
//! the file is kept until the last one commits. A crash meanwhile leaves a
//! state that says it holds nothing, and Raft installs the file again at
//! start.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::EntryPayload;
use openraft::alias::{LogIdOf, StoredMembershipOf};
use redb::{ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::snapshot::{Meta, Row, SnapshotData, SnapshotDir, SnapshotReader, SnapshotWriter};
use super::{Payload, StorageHealth, StoreIdentity, decode, encode, io_err};
use crate::consensus::disk_faults::DiskFaults;
use crate::consensus::types::{Answer, Applied, LockState, Query, State, StateRead, StateWrite, TypeConfig, apply_to, query_from};

type Table<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type LogId = LogIdOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("locks");
const BARRIERS: TableDefinition<&str, &[u8]> = TableDefinition::new("barriers");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";
const INSTALLING: &str = "installing";
const IDENTITY: &str = "identity";

/// Longest an applied change stays only in redb's memory.
pub const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// redb's page cache for the state: what a member's memory holds of it.
pub const STATE_CACHE_BYTES: usize = 64 << 20;
/// Bytes of rows an install writes per transaction.
const INSTALL_TXN_BYTES: usize = 64 << 20;
/// Requests waiting for the state thread.
const QUEUE: usize = 64;

/// The state's tables in one transaction.
struct Tables<T> {
    kv: T,
    locks: T,
    barriers: T,
}

fn get<T: ReadableTable<&'static str, &'static [u8]>>(t: &T, key: &str) -> io::Result<Option<Vec<u8>>> {
    Ok(t.get(key).map_err(io_err)?.map(|v| v.value().to_vec()))
}

impl<T: ReadableTable<&'static str, &'static [u8]>> StateRead for Tables<T> {
    type Error = io::Error;
    fn value(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        get(&self.kv, key)
    }
    fn lock(&self, name: &str) -> io::Result<Option<LockState>> {
        get(&self.locks, name)?.map(|b| decode(&b)).transpose()
    }
    fn arrived(&self, barrier: &str) -> io::Result<BTreeSet<String>> {
        Ok(get(&self.barriers, barrier)?.map(|b| decode(&b)).transpose()?.unwrap_or_default())
    }
}

impl StateWrite for Tables<Table<'_>> {
    fn set_value(&mut self, key: String, value: Vec<u8>) -> io::Result<()> {
        self.kv.insert(key.as_str(), value.as_slice()).map(drop).map_err(io_err)
    }
    fn remove_value(&mut self, key: &str) -> io::Result<()> {
        self.kv.remove(key).map(drop).map_err(io_err)
    }
    fn set_lock(&mut self, name: String, lock: LockState) -> io::Result<()> {
        self.locks.insert(name.as_str(), encode(&lock)?.as_slice()).map(drop).map_err(io_err)
    }
    fn remove_lock(&mut self, name: &str) -> io::Result<()> {
        self.locks.remove(name).map(drop).map_err(io_err)
    }
    fn set_arrived(&mut self, barrier: String, arrived: BTreeSet<String>) -> io::Result<()> {
        self.barriers.insert(barrier.as_str(), encode(&arrived)?.as_slice()).map(drop).map_err(io_err)
    }
}

impl Tables<Table<'_>> {
    fn open(txn: &redb::WriteTransaction) -> io::Result<Tables<Table<'_>>> {
        Ok(Tables {
            kv: txn.open_table(KV).map_err(io_err)?,
            locks: txn.open_table(LOCKS).map_err(io_err)?,
            barriers: txn.open_table(BARRIERS).map_err(io_err)?,
        })
    }

    fn insert(&mut self, row: Row) -> io::Result<usize> {
        let (table, key, value) = match row {
            Row::Kv(k, v) => (&mut self.kv, k, v),
            Row::Lock(k, l) => (&mut self.locks, k, encode(&l)?),
            Row::Barrier(k, b) => (&mut self.barriers, k, encode(&b)?),
        };
        table.insert(key.as_str(), value.as_slice()).map_err(io_err)?;
        Ok(key.len() + value.len())
    }
}

type ReadTables = Tables<redb::ReadOnlyTable<&'static str, &'static [u8]>>;

/// The tables as of `txn`; `None` before anything was applied.
fn read_tables(txn: &redb::ReadTransaction) -> io::Result<Option<ReadTables>> {
    let open = |def| match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(io_err(e)),
    };
    Ok(match (open(KV)?, open(LOCKS)?, open(BARRIERS)?) {
        (Some(kv), Some(locks), Some(barriers)) => Some(Tables { kv, locks, barriers }),
        _ => None,
    })
}

/// What the state database says at open.
pub(super) struct Opened {
    pub identity: Option<StoreIdentity>,
    pub applied: Option<LogId>,
    pub membership: Membership,
}

fn read_meta(txn: &redb::ReadTransaction) -> io::Result<Opened> {
    let mut opened = Opened { identity: None, applied: None, membership: Membership::default() };
    let t = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(opened),
        Err(e) => return Err(io_err(e)),
    };
    opened.identity = get(&t, IDENTITY)?.map(|b| decode(&b)).transpose()?;
    // A snapshot install that did not finish: the state holds nothing
    // usable, and Raft installs the current snapshot again.
    if get(&t, INSTALLING)?.is_some() {
        return Ok(opened);
    }
    opened.applied = get(&t, APPLIED)?.map(|b| decode::<Option<LogId>>(&b)).transpose()?.flatten();
    opened.membership = get(&t, MEMBERSHIP)?.map(|b| decode(&b)).transpose()?.unwrap_or_default();
    Ok(opened)
}

enum Msg {
    Apply(Vec<(LogId, Payload)>, oneshot::Sender<io::Result<Vec<Applied>>>),
    Query(Query, oneshot::Sender<io::Result<Answer>>),
    Dump(oneshot::Sender<io::Result<State>>),
    Snapshot(oneshot::Sender<io::Result<(redb::ReadTransaction, Meta)>>),
    Install(Meta, SnapshotData, oneshot::Sender<io::Result<()>>),
    Close(oneshot::Sender<()>),
}

/// The state database and its thread. Cheap to clone.
#[derive(Clone)]
pub(super) struct StateDb {
    tx: mpsc::Sender<Msg>,
    pub snapshots: Arc<SnapshotDir>,
}

impl StateDb {
    /// Opens (or creates) `dir/state.redb` and starts its thread: a corrupt
    /// file is an error that names it, and it is left as it was. Blocking.
    pub fn open(dir: &Path, identity: &StoreIdentity, faults: DiskFaults, health: StorageHealth) -> io::Result<(Self, Opened)> {
        let file = dir.join("state.redb");
        let corrupt = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("{} is corrupt: {why}", file.display()));
        let (db, opened) = std::panic::catch_unwind(|| {
            let db = redb::Builder::new().set_cache_size(STATE_CACHE_BYTES).create(&file).map_err(|e| corrupt(e.to_string()))?;
            let opened = db.begin_read().map_err(io_err).and_then(|t| read_meta(&t)).map_err(|e| corrupt(e.to_string()))?;
            Ok::<_, io::Error>((db, opened))
        })
        .unwrap_or_else(|_| Err(corrupt("the database panicked while opening".into())))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        if let Some(found) = &opened.identity
            && found != identity
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} belongs to member {} of cluster {:?}, not member {} of {:?}: use this member's own data directory",
                    file.display(),
                    found.id,
                    found.cluster_id,
                    identity.id,
                    identity.cluster_id
                ),
            ));
        }
        if opened.identity.is_none() {
            let txn = db.begin_write().map_err(io_err)?;
            txn.open_table(META).map_err(io_err)?.insert(IDENTITY, encode(identity)?.as_slice()).map_err(io_err)?;
            txn.commit().map_err(io_err)?;
        }
        let snapshots = Arc::new(SnapshotDir::open(dir)?);
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(QUEUE);
        let worker = Worker { db, snapshots: snapshots.clone(), faults, health, last_durable: Instant::now(), open: None };
        // A thread of its own: redb's writes block. It exists only with a
        // data directory, which simulation never has.
        #[allow(clippy::disallowed_methods)]
        std::thread::Builder::new().name("foundation-raft-state".into()).spawn(move || worker.run(rx))?;
        Ok((Self { tx, snapshots }, opened))
    }

    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<io::Result<T>>) -> Msg) -> io::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(msg(tx)).await.map_err(|_| io_err("the state database is closed"))?;
        rx.await.map_err(|_| io_err("the state database stopped"))?
    }

    /// Applies committed entries; what each did, in order.
    pub async fn apply(&self, entries: Vec<(LogId, Payload)>) -> io::Result<Vec<Applied>> {
        self.ask(|tx| Msg::Apply(entries, tx)).await
    }

    /// What is applied now, made durable, as a snapshot: a read
    /// transaction, encoded only when it is sent. Applying goes on.
    pub async fn snapshot(&self) -> io::Result<(Meta, SnapshotData)> {
        let (txn, meta) = self.ask(Msg::Snapshot).await?;
        Ok((meta.clone(), SnapshotData::Db(Arc::new(DbSnapshot { txn, meta }))))
    }

    /// Replaces the state with `data`'s, which becomes the current snapshot.
    pub async fn install(&self, meta: Meta, data: SnapshotData) -> io::Result<()> {
        self.ask(|tx| Msg::Install(meta, data, tx)).await
    }

    /// Answers `q` from the latest applied state (on the state thread,
    /// which sees what it has applied and not yet committed).
    pub async fn query(&self, q: &Query) -> io::Result<Answer> {
        let q = q.clone();
        self.ask(|tx| Msg::Query(q, tx)).await
    }

    /// The whole state in memory (for comparisons in tests).
    pub async fn dump(&self) -> io::Result<State> {
        self.ask(Msg::Dump).await
    }

    /// Stops the thread after what is queued; the database closes when
    /// the last handle goes.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Every row of `t`.
fn dump_tables<T: ReadableTable<&'static str, &'static [u8]>>(t: &Tables<T>) -> io::Result<State> {
    let mut state = State::default();
    for row in t.kv.iter().map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        state.kv.insert(k.value().to_owned(), v.value().to_vec());
    }
    for row in t.locks.iter().map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        state.locks.insert(k.value().to_owned(), decode(v.value())?);
    }
    for row in t.barriers.iter().map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        state.barriers.insert(k.value().to_owned(), decode(v.value())?);
    }
    Ok(state)
}

/// The state as of one read transaction (redb keeps what it sees until it
/// is dropped).
pub struct DbSnapshot {
    txn: redb::ReadTransaction,
    meta: Meta,
}

impl DbSnapshot {
    /// Encodes the snapshot into `out`, one row at a time.
    pub(crate) fn write_to<W: std::io::Write>(&self, out: W) -> io::Result<()> {
        let mut w = SnapshotWriter::new(out, &self.meta)?;
        if let Some(tables) = read_tables(&self.txn)? {
            for row in tables.kv.iter().map_err(io_err)? {
                let (k, v) = row.map_err(io_err)?;
                w.row(&Row::Kv(k.value().to_owned(), v.value().to_vec()))?;
            }
            for row in tables.locks.iter().map_err(io_err)? {
                let (k, v) = row.map_err(io_err)?;
                w.row(&Row::Lock(k.value().to_owned(), decode(v.value())?))?;
            }
            for row in tables.barriers.iter().map_err(io_err)? {
                let (k, v) = row.map_err(io_err)?;
                w.row(&Row::Barrier(k.value().to_owned(), decode(v.value())?))?;
            }
        }
        w.finish().map(drop)
    }
}

/// The state thread.
struct Worker {
    db: Arc<redb::Database>,
    snapshots: Arc<SnapshotDir>,
    faults: DiskFaults,
    health: StorageHealth,
    last_durable: Instant,
    /// Applied batches not yet committed, and when the first was: reads go
    /// through this thread and see them; they commit after [`HOLD`] (or
    /// before a snapshot, an install or closing). The log they came from is
    /// durable, so a crash loses nothing Raft cannot apply again.
    open: Option<(redb::WriteTransaction, Instant)>,
}

/// Longest a transaction of applied batches stays open: one commit per
/// [`HOLD`] instead of one per batch (a redb commit costs far more than a
/// batch of small writes).
const HOLD: Duration = Duration::from_millis(5);

impl Worker {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Apply(entries, reply) => {
                    let r = self.guarded(|w| w.apply(entries));
                    let _ = reply.send(r);
                }
                Msg::Snapshot(reply) => {
                    let r = self.guarded(Self::freeze);
                    let _ = reply.send(r);
                }
                Msg::Query(q, reply) => {
                    let _ = reply.send(self.view(|t| query_from(t, &q), |t| query_from(t, &q), |s| s.query(&q)));
                }
                Msg::Dump(reply) => {
                    let _ = reply.send(self.view(|t| dump_tables(t), dump_tables, State::clone));
                }
                Msg::Install(meta, data, reply) => {
                    let r = self.guarded(|w| w.install(&meta, &data));
                    let _ = reply.send(r);
                }
                Msg::Close(ack) => {
                    rx.close();
                    let _ = self.guarded(Self::flush);
                    drop(self);
                    let _ = ack.send(());
                    return;
                }
            }
        }
    }

    /// Runs a write under the injected faults; a failure (or a redb panic on
    /// a corrupt file) is reported to the member's storage health.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        let r = self.faults.before_batch().and_then(|latency| {
            if !latency.is_zero() {
                std::thread::sleep(latency);
            }
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)))
                .unwrap_or_else(|_| Err(io_err("the state database panicked while writing: it is corrupt")))
        });
        if let Err(e) = &r {
            tracing::error!(error = %e, "raft state write failed");
            self.health.fail(e.to_string());
        }
        r
    }

    fn begin(&mut self, durable: bool) -> io::Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write().map_err(io_err)?;
        if durable || self.last_durable.elapsed() >= DURABLE_EVERY {
            self.last_durable = Instant::now();
        } else {
            txn.set_durability(redb::Durability::None);
        }
        Ok(txn)
    }

    /// Commits the open transaction, if any.
    fn flush(&mut self) -> io::Result<()> {
        match self.open.take() {
            Some((txn, _)) => txn.commit().map_err(io_err),
            None => Ok(()),
        }
    }

    /// Reads the state as this thread sees it (uncommitted batches
    /// included): through the open transaction, or a read transaction.
    fn view<T>(
        &mut self,
        open: impl FnOnce(&Tables<Table<'_>>) -> io::Result<T>,
        committed: impl FnOnce(&ReadTables) -> io::Result<T>,
        empty: impl FnOnce(&State) -> T,
    ) -> io::Result<T> {
        if let Some((txn, _)) = &self.open {
            return open(&Tables::open(txn)?);
        }
        let txn = self.db.begin_read().map_err(io_err)?;
        match read_tables(&txn)? {
            Some(t) => committed(&t),
            None => Ok(empty(&State::default())),
        }
    }

    fn apply(&mut self, entries: Vec<(LogId, Payload)>) -> io::Result<Vec<Applied>> {
        let (txn, since) = match self.open.take() {
            Some(open) => open,
            None => (self.begin(false)?, Instant::now()),
        };
        let mut answers = Vec::with_capacity(entries.len());
        {
            let mut tables = Tables::open(&txn)?;
            let mut meta = txn.open_table(META).map_err(io_err)?;
            let mut membership = None;
            let mut last = None;
            for (log_id, payload) in entries {
                answers.push(match payload {
                    EntryPayload::Blank => Applied::default(),
                    EntryPayload::Normal(cmd) => apply_to(&mut tables, log_id.index, cmd)?,
                    EntryPayload::Membership(m) => {
                        membership = Some(Membership::new(Some(log_id), m));
                        Applied::default()
                    }
                });
                last = Some(log_id);
            }
            if let Some(m) = membership {
                meta.insert(MEMBERSHIP, encode(&m)?.as_slice()).map_err(io_err)?;
            }
            if let Some(last) = last {
                meta.insert(APPLIED, encode(&Some(last))?.as_slice()).map_err(io_err)?;
            }
        }
        if since.elapsed() >= HOLD {
            txn.commit().map_err(io_err)?;
        } else {
            self.open = Some((txn, since));
        }
        Ok(answers)
    }

    /// Makes what is applied durable and opens a read transaction on it.
    fn freeze(&mut self) -> io::Result<(redb::ReadTransaction, Meta)> {
        self.flush()?;
        let txn = self.begin(true)?;
        txn.commit().map_err(io_err)?;
        let read = self.db.begin_read().map_err(io_err)?;
        let opened = read_meta(&read)?;
        Ok((read, Meta { last_log_id: opened.applied, last_membership: opened.membership }))
    }

    fn install(&mut self, meta: &Meta, data: &SnapshotData) -> io::Result<()> {
        // The file is kept until the state holds it: if the install stops
        // halfway, the `installing` mark makes Raft install it again.
        self.flush()?;
        if let SnapshotData::File(f) = data {
            self.snapshots.adopt(&f.path)?;
        }
        let txn = self.begin(true)?;
        {
            let mut m = txn.open_table(META).map_err(io_err)?;
            m.insert(INSTALLING, [].as_slice()).map_err(io_err)?;
            m.remove(APPLIED).map_err(io_err)?;
        }
        for def in [KV, LOCKS, BARRIERS] {
            txn.delete_table(def).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        let (found, mut rows) = SnapshotReader::open(data.reader())?;
        if found != *meta {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the snapshot's header does not match its metadata"));
        }
        let mut more = true;
        while more {
            let txn = self.begin(false)?;
            {
                let mut tables = Tables::open(&txn)?;
                let mut bytes = 0;
                while bytes < INSTALL_TXN_BYTES {
                    match rows.next_row()? {
                        Some(row) => bytes += tables.insert(row)?,
                        None => {
                            more = false;
                            break;
                        }
                    }
                }
            }
            txn.commit().map_err(io_err)?;
        }
        let txn = self.begin(true)?;
        {
            let mut m = txn.open_table(META).map_err(io_err)?;
            m.remove(INSTALLING).map_err(io_err)?;
            m.insert(APPLIED, encode(&meta.last_log_id)?.as_slice()).map_err(io_err)?;
            m.insert(MEMBERSHIP, encode(&meta.last_membership)?.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        self.snapshots.installed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::types::Command;

    fn log_id(index: u64) -> LogId {
        openraft::LogId {
            leader_id: <openraft::alias::LeaderIdOf<TypeConfig> as openraft::vote::RaftLeaderIdExt>::new_committed(1, 1),
            index,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_was_applied_is_there_after_a_reopen() {
        let dir = std::env::temp_dir().join(format!("foundation-state-db-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::server::private_dir(&dir).unwrap();
        let me = StoreIdentity { cluster_id: "c".into(), id: 1 };
        let (db, opened) = StateDb::open(&dir, &me, DiskFaults::new(), StorageHealth::default()).unwrap();
        assert_eq!(opened.applied, None);
        let put = |k: &str| EntryPayload::Normal(Command::Put { key: k.into(), value: k.as_bytes().to_vec() });
        let answers = db.apply(vec![(log_id(1), put("a")), (log_id(2), EntryPayload::Blank), (log_id(3), put("a"))]).await.unwrap();
        assert_eq!(answers.iter().map(|a| a.previous.clone()).collect::<Vec<_>>(), [None, None, Some(b"a".to_vec())]);
        // A snapshot makes it durable; the reopened database says so.
        let (meta, _) = db.snapshot().await.unwrap();
        assert_eq!(meta.last_log_id, Some(log_id(3)));
        db.close().await;
        drop(db);
        let (db, opened) = StateDb::open(&dir, &me, DiskFaults::new(), StorageHealth::default()).unwrap();
        assert_eq!(opened.applied, Some(log_id(3)));
        assert_eq!(db.query(&Query::Get("a".into())).await.unwrap(), Answer::Value(Some(b"a".to_vec())));
        db.close().await;
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
