//! The state machine in a data directory: `state.redb`, next to the Raft
//! log's `raft.log`, written by a thread of its own.
//!
//! The state lives in the database (tables `kv`, `locks`, `barriers`), read
//! through redb transactions and its bounded page cache: a member's memory
//! does not grow with its state. Applying changes a layer in memory
//! (`Layers::active`, reads look there first); once it holds
//! [`FLUSH_BYTES`], the state thread writes it in one transaction, in key
//! order, while applying goes on into a fresh layer (at most two in
//! memory). What was applied up to (`applied`) and the membership are
//! written in the same transaction as the changes, so the database is
//! always a consistent state at some log index.
//!
//! Those transactions commit without fsync (`Durability::None`: the log
//! the changes came from is durable, and Raft applies them again after a
//! crash), with a durable commit at least every [`DURABLE_EVERY`] and for
//! every snapshot: a snapshot is a durable state, so the log behind it can
//! go.
//! A snapshot is not a copy: it is a read transaction (redb's MVCC), which
//! applying does not disturb, encoded row by row only when a follower needs
//! it. A snapshot received from the leader is written into a new database
//! as it arrives ([`Staging`]); installing it renames that database over
//! `state.redb`. (An install of an older kind, a file replacing the tables
//! under an `installing` mark, is redone at start if it was cut short.)
//! Values larger than a 64 KiB page are stored in chunks (`tables.rs`).

use std::collections::{BTreeMap, BTreeSet};
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

mod layers;
mod stage;
mod tables;
pub use layers::FLUSH_BYTES;
use layers::{Changes, Layers, Which, unusable};
pub(crate) use stage::{Staged, Staging};
use tables::{ReadTables, WriteTables, read_tables};

type LogId = LogIdOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";
const INSTALLING: &str = "installing";
const IDENTITY: &str = "identity";

/// Longest an applied change stays only in redb's memory.
pub const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// redb's page cache for the state: what a member's memory holds of it.
pub const STATE_CACHE_BYTES: usize = 64 << 20;
/// Bytes of rows an install writes per transaction: under redb's write
/// buffer (a tenth of its cache, 6.4 MiB). A larger transaction's pages
/// are evicted before it commits, and the commit reads them all back to
/// checksum them, then writes them again (measured on 1 GiB of 256 KiB
/// values: 64 MiB transactions inserted at 619 MB/s, 4 MiB ones at 860).
const INSTALL_TXN_BYTES: usize = 4 << 20;
/// Requests waiting for the state thread.
const QUEUE: usize = 64;

/// What the state database says at open.
pub(super) struct Opened {
    pub identity: Option<StoreIdentity>,
    pub applied: Option<LogId>,
    pub membership: Membership,
}

/// Opens (or creates) a state database at `path` with the state's cache.
fn open_db(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    redb::Builder::new().set_cache_size(STATE_CACHE_BYTES).create(path)
}

/// Records, in `txn`, that the state is `meta`'s: what it holds up to and
/// the membership.
fn write_position(txn: &redb::WriteTransaction, meta: &Meta) -> io::Result<()> {
    let mut m = txn.open_table(META).map_err(io_err)?;
    m.insert(APPLIED, encode(&meta.last_log_id)?.as_slice()).map_err(io_err)?;
    m.insert(MEMBERSHIP, encode(&meta.last_membership)?.as_slice()).map_err(io_err)?;
    Ok(())
}

fn get(t: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> io::Result<Option<Vec<u8>>> {
    Ok(t.get(key).map_err(io_err)?.map(|v| v.value().to_vec()))
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

/// A flush: changes to write, what they were applied up to, and (for a
/// snapshot) a durable commit and a read transaction on it.
struct Flush {
    changes: Arc<Changes>,
    applied: Option<LogId>,
    membership: Membership,
    snapshot: Option<oneshot::Sender<io::Result<(redb::ReadTransaction, Meta)>>>,
}

enum Msg {
    Flush(Flush),
    Install(Meta, SnapshotData, oneshot::Sender<io::Result<()>>),
    Close(oneshot::Sender<()>),
}

/// The state database and its thread. Cheap to clone.
#[derive(Clone)]
pub(super) struct StateDb {
    tx: mpsc::Sender<Msg>,
    layers: Arc<parking_lot::Mutex<Layers>>,
    /// Bumped when a flush or an install ends.
    flushed: Arc<tokio::sync::watch::Sender<u64>>,
    pub snapshots: Arc<SnapshotDir>,
}

impl StateDb {
    /// Opens (or creates) `dir/state.redb` and starts its thread: a corrupt
    /// file is an error that names it, and it is left as it was. Blocking.
    pub fn open(dir: &Path, identity: &StoreIdentity, faults: DiskFaults, health: StorageHealth) -> io::Result<(Self, Opened)> {
        let file = dir.join("state.redb");
        let corrupt = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("{} is corrupt: {why}", file.display()));
        let (db, opened) = std::panic::catch_unwind(|| {
            let db = open_db(&file).map_err(|e| corrupt(e.to_string()))?;
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
        // The identity, and every table (a database written before values
        // were stored in chunks gains those tables here).
        if opened.identity.is_none() || read_tables(&db.begin_read().map_err(io_err)?)?.is_none() {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let txn = db.begin_write().map_err(io_err)?;
                WriteTables::open(&txn)?;
                if opened.identity.is_none() {
                    txn.open_table(META).map_err(io_err)?.insert(IDENTITY, encode(identity)?.as_slice()).map_err(io_err)?;
                }
                txn.commit().map_err(io_err)
            }))
            .unwrap_or_else(|_| Err(corrupt("the database panicked while writing".into())))?;
        }
        let snapshots = Arc::new(SnapshotDir::open(dir)?);
        let mut layers = Layers {
            active: Changes::default(),
            active_bytes: 0,
            flushing: None,
            read: None,
            tables: None,
            applied: opened.applied,
            membership: opened.membership.clone(),
        };
        layers.publish(Some(db.begin_read().map_err(io_err)?))?;
        let layers = Arc::new(parking_lot::Mutex::new(layers));
        let flushed = Arc::new(tokio::sync::watch::channel(0).0);
        let (tx, rx) = mpsc::channel(QUEUE);
        let worker = Worker {
            db,
            file: file.clone(),
            snapshots: snapshots.clone(),
            faults,
            health,
            last_durable: Instant::now(),
            layers: layers.clone(),
            flushed: flushed.clone(),
        };
        // A thread of its own: redb's writes block. It exists only with a
        // data directory, which simulation never has.
        #[allow(clippy::disallowed_methods)]
        std::thread::Builder::new().name("foundation-raft-state".into()).spawn(move || worker.run(rx))?;
        Ok((Self { tx, layers, flushed, snapshots }, opened))
    }

    async fn send(&self, msg: Msg) -> io::Result<()> {
        self.tx.send(msg).await.map_err(|_| io_err("the state database is closed"))
    }

    /// Waits until no flush is in flight, then hands `active` to the state
    /// thread (with `snapshot`: a durable commit and a read transaction).
    async fn flush(&self, snapshot: Option<oneshot::Sender<io::Result<(redb::ReadTransaction, Meta)>>>) -> io::Result<()> {
        let flush = loop {
            let mut done = self.flushed.subscribe();
            {
                let mut l = self.layers.lock();
                l.read.as_ref().ok_or_else(unusable)?;
                if l.flushing.is_none() {
                    let changes = Arc::new(std::mem::take(&mut l.active));
                    l.active_bytes = 0;
                    l.flushing = Some(changes.clone());
                    break Flush { changes, applied: l.applied, membership: l.membership.clone(), snapshot };
                }
            }
            done.changed().await.map_err(|_| unusable())?;
        };
        self.send(Msg::Flush(flush)).await
    }

    /// Applies committed entries (each with whether its answer is
    /// awaited); what each did, in order. A full batch of
    /// changes goes to the state thread (waiting while the one before is
    /// still being written: at most two batches in memory).
    pub async fn apply(&self, entries: Vec<(LogId, Payload, bool)>) -> io::Result<Vec<Applied>> {
        let (answers, full) = {
            let mut l = self.layers.lock();
            l.read.as_ref().ok_or_else(unusable)?;
            let mut answers = Vec::with_capacity(entries.len());
            for (log_id, payload, answered) in entries {
                answers.push(match payload {
                    EntryPayload::Blank => Applied::default(),
                    EntryPayload::Normal(cmd) => apply_to(&mut *l, log_id.index, cmd, answered)?,
                    EntryPayload::Membership(m) => {
                        l.membership = Membership::new(Some(log_id), m);
                        Applied::default()
                    }
                });
                l.applied = Some(log_id);
            }
            (answers, l.active_bytes >= FLUSH_BYTES)
        };
        if full {
            self.flush(None).await?;
        }
        Ok(answers)
    }

    /// What is applied now, written and made durable, as a snapshot: a read
    /// transaction, encoded only when it is sent. Applying goes on.
    pub async fn snapshot(&self) -> io::Result<(Meta, SnapshotData)> {
        let (tx, rx) = oneshot::channel();
        self.flush(Some(tx)).await?;
        let (txn, meta) = rx.await.map_err(|_| io_err("the state database stopped"))??;
        Ok((meta.clone(), SnapshotData::Db(Arc::new(DbSnapshot { txn, meta, _db: None }))))
    }

    /// Replaces the state with `data`'s.
    pub async fn install(&self, meta: Meta, data: SnapshotData) -> io::Result<()> {
        loop {
            let mut done = self.flushed.subscribe();
            {
                let mut l = self.layers.lock();
                l.read.as_ref().ok_or_else(unusable)?;
                if l.flushing.is_none() {
                    // What was applied before is replaced.
                    l.active = Changes::default();
                    l.active_bytes = 0;
                    break;
                }
            }
            done.changed().await.map_err(|_| unusable())?;
        }
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Install(meta.clone(), data, tx)).await?;
        rx.await.map_err(|_| io_err("the state database stopped"))??;
        let mut l = self.layers.lock();
        l.applied = meta.last_log_id;
        l.membership = meta.last_membership;
        Ok(())
    }

    /// Answers `q` from what is applied (a point read through the layers
    /// and redb's cache, on the calling task).
    pub fn query(&self, q: &Query) -> io::Result<Answer> {
        query_from(&*self.layers.lock(), q)
    }

    /// The whole state in memory (for comparisons in tests).
    pub fn dump(&self) -> io::Result<State> {
        let l = self.layers.lock();
        l.read.as_ref().ok_or_else(unusable)?;
        let mut state = State::default();
        if let Some(t) = &l.tables {
            t.rows(|row| {
                match row.into_row() {
                    Row::Kv(k, v) => drop(state.kv.insert(k, v)),
                    Row::Lock(k, v) => drop(state.locks.insert(k, v)),
                    Row::Barrier(k, v) => drop(state.barriers.insert(k, v)),
                }
                Ok(())
            })?;
        }
        for changes in l.flushing.iter().map(|f| &**f).chain([&l.active]) {
            for (which, key, value) in changes.iter() {
                match (which, value) {
                    (Which::Kv, Some(v)) => drop(state.kv.insert(key.clone(), v.clone())),
                    (Which::Kv, None) => drop(state.kv.remove(key)),
                    (Which::Lock, Some(v)) => drop(state.locks.insert(key.clone(), decode(v)?)),
                    (Which::Lock, None) => drop(state.locks.remove(key)),
                    (Which::Barrier, Some(v)) => drop(state.barriers.insert(key.clone(), decode(v)?)),
                    (Which::Barrier, None) => drop(state.barriers.remove(key)),
                }
            }
        }
        Ok(state)
    }

    /// Writes what is applied, then stops the thread; the database closes
    /// with it.
    pub async fn close(&self) {
        let _ = self.flush(None).await;
        let (tx, rx) = oneshot::channel();
        if self.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The state as of one read transaction (redb keeps what it sees until it
/// is dropped).
pub struct DbSnapshot {
    txn: redb::ReadTransaction,
    meta: Meta,
    /// The database, when the snapshot opened it (a staged one).
    _db: Option<redb::Database>,
}

impl DbSnapshot {
    /// Encodes the snapshot into `out`, one row at a time.
    pub(crate) fn write_to<W: std::io::Write>(&self, out: W) -> io::Result<()> {
        let mut w = SnapshotWriter::new(out, &self.meta)?;
        if let Some(tables) = read_tables(&self.txn)? {
            tables.rows(|row| w.row(&row))?;
        }
        w.finish().map(drop)
    }
}

/// The state thread.
struct Worker {
    db: redb::Database,
    /// `state.redb`.
    file: std::path::PathBuf,
    snapshots: Arc<SnapshotDir>,
    faults: DiskFaults,
    health: StorageHealth,
    last_durable: Instant,
    layers: Arc<parking_lot::Mutex<Layers>>,
    flushed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Worker {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Flush(Flush { changes, applied, membership, snapshot }) => {
                    let durable = snapshot.is_some();
                    let r = self.guarded(|w| w.write(&changes, applied, &membership, durable));
                    self.published();
                    if let Some(reply) = snapshot {
                        let _ = reply.send(r.and_then(|()| {
                            let read = self.db.begin_read().map_err(io_err)?;
                            let opened = read_meta(&read)?;
                            Ok((read, Meta { last_log_id: opened.applied, last_membership: opened.membership }))
                        }));
                    }
                }
                Msg::Install(meta, data, reply) => {
                    let r = self.guarded(|w| w.install(&meta, &data));
                    self.published();
                    let _ = reply.send(r);
                }
                Msg::Close(ack) => {
                    rx.close();
                    let _ = self.layers.lock().publish(None);
                    self.flushed.send_modify(|n| *n += 1);
                    drop(self);
                    let _ = ack.send(());
                    return;
                }
            }
        }
    }

    /// What the database holds now becomes what reads see (after a failed
    /// write: nothing, until the member reopens its storage).
    fn published(&self) {
        let read = if self.health.failure().is_some() { None } else { self.db.begin_read().ok() };
        let mut l = self.layers.lock();
        l.flushing = None;
        if l.publish(read).is_err() {
            let _ = l.publish(None);
        }
        drop(l);
        self.flushed.send_modify(|n| *n += 1);
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

    /// Writes a batch of changes in key order, with what they were applied
    /// up to, in one transaction.
    fn write(&mut self, changes: &Changes, applied: Option<LogId>, membership: &Membership, durable: bool) -> io::Result<()> {
        let txn = self.begin(durable)?;
        {
            let mut tables = WriteTables::open(&txn)?;
            for (which, key, value) in changes.iter() {
                tables.set(which, key, value.as_deref())?;
            }
            let mut meta = txn.open_table(META).map_err(io_err)?;
            if applied.is_some() {
                meta.insert(APPLIED, encode(&applied)?.as_slice()).map_err(io_err)?;
                meta.insert(MEMBERSHIP, encode(membership)?.as_slice()).map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)
    }

    fn install(&mut self, meta: &Meta, data: &SnapshotData) -> io::Result<()> {
        if let SnapshotData::Staged(staged) = data {
            return self.swap(meta, staged);
        }
        // The file is kept until the state holds it: if the install stops
        // halfway, the `installing` mark makes Raft install it again.
        if let SnapshotData::File(f) = data {
            self.snapshots.adopt(&f.path)?;
        }
        let txn = self.begin(true)?;
        {
            let mut m = txn.open_table(META).map_err(io_err)?;
            m.insert(INSTALLING, [].as_slice()).map_err(io_err)?;
            m.remove(APPLIED).map_err(io_err)?;
        }
        WriteTables::delete(&txn)?;
        txn.commit().map_err(io_err)?;
        let (found, mut rows) = SnapshotReader::open(data.reader())?;
        if found != *meta {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the snapshot's header does not match its metadata"));
        }
        stage::insert_rows(&self.db, &mut rows, || Ok(()))?;
        let txn = self.begin(true)?;
        {
            WriteTables::open(&txn)?;
            let mut m = txn.open_table(META).map_err(io_err)?;
            m.remove(INSTALLING).map_err(io_err)?;
        }
        write_position(&txn, meta)?;
        txn.commit().map_err(io_err)?;
        self.snapshots.installed()
    }

    /// Installs a staged snapshot: its database (durable, this member's
    /// identity in it) is renamed over `state.redb` and opened in place of
    /// the old one. Reads of the old one finish on its open file.
    fn swap(&mut self, meta: &Meta, staged: &Staged) -> io::Result<()> {
        if staged.meta != *meta {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the snapshot's header does not match its metadata"));
        }
        std::fs::rename(&staged.path, &self.file)?;
        for dir in [self.file.parent(), staged.path.parent()].into_iter().flatten() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.db = open_db(&self.file).map_err(io_err)?;
        self.last_durable = Instant::now();
        // An install of an older kind cut short is moot now.
        self.snapshots.installed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::types::Command;

    pub(super) fn log_id(index: u64) -> LogId {
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
        let answers =
            db.apply(vec![(log_id(1), put("a"), true), (log_id(2), EntryPayload::Blank, true), (log_id(3), put("a"), true)]).await.unwrap();
        assert_eq!(db.query(&Query::Get("a".into())).unwrap(), Answer::Value(Some(b"a".to_vec())), "read before it is written");
        assert_eq!(answers.iter().map(|a| a.previous.clone()).collect::<Vec<_>>(), [None, None, Some(b"a".to_vec())]);
        // A snapshot makes it durable; the reopened database says so.
        let (meta, _) = db.snapshot().await.unwrap();
        assert_eq!(meta.last_log_id, Some(log_id(3)));
        db.close().await;
        drop(db);
        let (db, opened) = StateDb::open(&dir, &me, DiskFaults::new(), StorageHealth::default()).unwrap();
        assert_eq!(opened.applied, Some(log_id(3)));
        assert_eq!(db.query(&Query::Get("a".into())).unwrap(), Answer::Value(Some(b"a".to_vec())));
        db.close().await;
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
