//! The log's database (`raft.redb`): one writer thread that alone holds it,
//! commits every waiting request in one transaction (group commit), reads
//! entries no longer cached, and compacts the file after a purge that
//! leaves it mostly free; what a data directory held at start.

#[allow(clippy::wildcard_imports)] // the store's private pieces (codecs, tables, types)
use super::*;

/// One change to the database.
pub(super) enum Op {
    Put(u64, Vec<u8>),
    /// Removes entries from this index on.
    TruncateFrom(u64),
    /// Removes entries up to this index, inclusive.
    PurgeTo(u64),
    Meta(&'static str, Vec<u8>),
}

pub(super) enum Done {
    Flushed(IOFlushed<TypeConfig>),
    Notify(oneshot::Sender<io::Result<()>>),
    /// Nobody waits (a write made at open, before the writer runs).
    Ignore,
}

pub(super) struct Request {
    pub(super) ops: Vec<Op>,
    pub(super) done: Done,
}

pub(super) enum Msg {
    Write(Request),
    /// Entries `from..to`, which are durable (no longer cached).
    Read(u64, u64, oneshot::Sender<io::Result<Vec<Entry>>>),
    /// Stop: close the database (its file lock goes), then answer.
    Close(oneshot::Sender<()>),
}

/// Where what Raft must not forget goes (absent in memory-only mode).
#[derive(Clone)]
pub(super) enum Disk {
    /// A redb database behind its writer thread.
    Redb(Redb),
    /// A [`MemoryDisk`]: written at once (or after the injected latency),
    /// outlives the node.
    Memory(MemoryDisk, DiskFaults, StorageHealth),
}

/// The log's database behind its writer thread (which also reads entries
/// no longer cached, and alone holds the database, so it can compact it),
/// and the highest index known durable (plus one; 0: none).
#[derive(Clone)]
pub(super) struct Redb {
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) durable: Arc<AtomicU64>,
}

impl Disk {
    /// Opens (or creates) the database under `dir` and starts its writer.
    /// A corrupt file is an error that names it (redb's own panics on
    /// some corruptions are caught here), and it is left as it was.
    pub(super) fn open(dir: &Path) -> io::Result<(redb::Database, Loaded)> {
        crate::server::private_dir(dir)?;
        let file = dir.join("raft.redb");
        let corrupt = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("{} is corrupt: {why}", file.display()));
        let opened = std::panic::catch_unwind(|| {
            let db = redb::Builder::new().set_cache_size(LOG_DB_CACHE_BYTES).create(&file).map_err(|e| corrupt(e.to_string()))?;
            let loaded = load(&db).map_err(|e| corrupt(e.to_string()))?;
            Ok::<_, io::Error>((db, loaded))
        });
        let (db, loaded) = match opened {
            Ok(r) => {
                let r = r?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
                r
            }
            Err(panic) => {
                let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()));
                return Err(corrupt(why.unwrap_or_else(|| "the database panicked while opening".into())));
            }
        };
        Ok((db, loaded))
    }

    /// Starts the writer thread of an opened database.
    pub(super) fn start(
        db: redb::Database,
        file: PathBuf,
        last: Option<u64>,
        faults: DiskFaults,
        health: StorageHealth,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(DISK_QUEUE);
        let durable = Arc::new(AtomicU64::new(last.map_or(0, |l| l + 1)));
        let writer_durable = durable.clone();
        // A thread of its own: redb's writes block. It exists only with a
        // data directory, which simulation never has (it uses `MemoryDisk`).
        #[allow(clippy::disallowed_methods)]
        std::thread::Builder::new()
            .name("foundation-raft-disk".into())
            .spawn(move || writer(db, file, rx, faults, health, writer_durable))?;
        Ok(Self::Redb(Redb { tx, durable }))
    }

    pub(super) async fn submit(&self, ops: Vec<Op>, done: Done) -> io::Result<()> {
        match self {
            Self::Redb(r) => r.tx.send(Msg::Write(Request { ops, done })).await.map_err(|_| io_err("the disk writer stopped")),
            Self::Memory(m, faults, health) => {
                match faults.before_batch() {
                    Err(e) => {
                        tracing::error!(error = %e, "raft storage write failed");
                        health.fail(e.to_string());
                        done.complete(Err(e));
                    }
                    Ok(latency) if latency.is_zero() => {
                        m.apply(&ops);
                        done.complete(Ok(()));
                    }
                    Ok(latency) => {
                        // A slow disk: half the batch reaches it before the
                        // wait, so a crash meanwhile leaves a torn tail
                        // (never acknowledged).
                        let (first, rest) = ops.split_at(ops.len() / 2);
                        m.apply(first);
                        tokio::time::sleep(latency).await;
                        m.apply(rest);
                        done.complete(Ok(()));
                    }
                }
                Ok(())
            }
        }
    }

    /// Finishes what is queued, closes the database and stops the writer.
    pub(super) async fn close(&self) {
        if let Self::Redb(r) = self {
            let (ack, rx) = oneshot::channel();
            if r.tx.send(Msg::Close(ack)).await.is_ok() {
                let _ = rx.await;
            }
        }
    }

    pub(super) async fn write(&self, ops: Vec<Op>) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.submit(ops, Done::Notify(tx)).await?;
        rx.await.map_err(|_| io_err("the disk writer stopped"))?
    }
}

impl Done {
    pub(super) fn complete(self, res: io::Result<()>) {
        match self {
            Done::Flushed(cb) => cb.io_completed(res),
            Done::Notify(tx) => {
                let _ = tx.send(res);
            }
            Done::Ignore => {}
        }
    }
}

/// What a data directory held at start.
#[derive(Default)]
pub(super) struct Loaded {
    pub(super) identity: Option<StoreIdentity>,
    /// The whole log (a `MemoryDisk`'s; a database's stays on disk).
    pub(super) log: BTreeMap<u64, Entry>,
    /// The log's last entry.
    pub(super) log_last: Option<LogId>,
    /// The last entry the current snapshot holds.
    pub(super) snapshot_index: Option<u64>,
    /// The last entry the state database holds.
    pub(super) applied_index: Option<u64>,
    pub(super) vote: Option<Vote>,
    pub(super) committed: Option<LogId>,
    pub(super) purged: Option<LogId>,
    pub(super) snapshot: Option<StoredSnapshot>,
    pub(super) participants: BTreeSet<u64>,
}

pub(super) fn load(db: &redb::Database) -> io::Result<Loaded> {
    let txn = db.begin_read().map_err(io_err)?;
    let mut loaded = Loaded::default();
    match txn.open_table(LOG) {
        Ok(t) => {
            if let Some((_, v)) = t.last().map_err(io_err)? {
                loaded.log_last = Some(decode::<Entry>(v.value())?.log_id);
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(io_err(e)),
    }
    match txn.open_table(META) {
        Ok(t) => {
            let get = |key: &str| -> io::Result<Option<Vec<u8>>> { Ok(t.get(key).map_err(io_err)?.map(|v| v.value().to_vec())) };
            loaded.identity = get(IDENTITY)?.map(|b| decode(&b)).transpose()?;
            loaded.vote = get(VOTE)?.map(|b| decode(&b)).transpose()?;
            loaded.committed = get(COMMITTED)?.map(|b| decode(&b)).transpose()?;
            loaded.purged = get(PURGED)?.map(|b| decode(&b)).transpose()?;
            loaded.participants = get(PARTICIPANTS)?.map(|b| decode(&b)).transpose()?.unwrap_or_default();
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(io_err(e)),
    }
    Ok(loaded)
}

/// The writer thread: every waiting request in one transaction.
fn writer(
    mut db: redb::Database,
    file: PathBuf,
    mut rx: mpsc::Receiver<Msg>,
    faults: DiskFaults,
    health: StorageHealth,
    durable: Arc<AtomicU64>,
) {
    let mut closing = None;
    let mut last_compaction: Option<std::time::Instant> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(r) => batch.push(r),
                Msg::Read(from, to, reply) => {
                    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_entries(&db, from, to)))
                        .unwrap_or_else(|_| Err(io_err("the Raft database panicked while reading: it is corrupt")));
                    let _ = reply.send(read);
                }
                Msg::Close(ack) => {
                    closing = Some(ack);
                    break;
                }
            }
            if batch.len() < 1024 {
                next = rx.try_recv().ok();
            }
        }
        let result = match faults.before_batch() {
            Err(e) => Err(e.to_string()),
            Ok(latency) => {
                if !latency.is_zero() {
                    std::thread::sleep(latency);
                }
                // A corruption found while writing (redb panics on some) is a
                // storage failure, not a dead writer thread.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(&db, &batch)))
                    .unwrap_or_else(|_| Err(io_err("the Raft database panicked while writing: it is corrupt")))
                    .map_err(|e| e.to_string())
            }
        };
        match &result {
            Err(e) => {
                tracing::error!(error = %e, "raft storage write failed");
                health.fail(e.clone());
            }
            Ok(()) => {
                let mut upto = durable.load(Ordering::Acquire);
                for op in batch.iter().flat_map(|r| &r.ops) {
                    match op {
                        Op::Put(i, _) => upto = upto.max(i + 1),
                        Op::TruncateFrom(i) => upto = upto.min(*i),
                        _ => {}
                    }
                }
                durable.store(upto, Ordering::Release);
            }
        }
        // A purge is done once its file is compacted (when it needs it).
        let purged = result.is_ok() && batch.iter().flat_map(|r| &r.ops).any(|op| matches!(op, Op::PurgeTo(_)));
        if purged && last_compaction.is_none_or(|t| t.elapsed() >= COMPACT_EVERY) {
            last_compaction = Some(std::time::Instant::now());
            compact_if_sparse(&mut db, &file);
        }
        for r in batch {
            r.done.complete(result.clone().map_err(io_err));
        }
        if closing.is_some() {
            break;
        }
    }
    rx.close();
    drop(db);
    if let Some(ack) = closing {
        let _ = ack.send(());
    }
}

/// Least time between two compactions of the log's file.
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// A log file smaller than this is never compacted.
const COMPACT_FILE_BYTES: u64 = 16 << 20;

/// After a purge: when the log's file is more than twice what its entries
/// take (redb reuses freed pages but never gives them back), compacts it.
/// The purged log is small next to its file, so this is quick (37 ms for
/// an 85 MB file holding 9 MB, measured); it waits behind nothing, and
/// appends wait for it.
fn compact_if_sparse(db: &mut redb::Database, file: &Path) {
    use redb::ReadableTableMetadata;
    let Ok(len) = std::fs::metadata(file).map(|m| m.len()) else { return };
    let live = db.begin_read().ok().and_then(|t| t.open_table(LOG).ok()).and_then(|t| t.stats().ok());
    let Some(live) = live.map(|s| s.stored_bytes() + s.metadata_bytes()) else { return };
    if len < COMPACT_FILE_BYTES || len < 2 * live {
        return;
    }
    let start = std::time::Instant::now();
    // Each pass moves what it can towards the start; a few passes finish.
    let passes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..4 {
            if !db.compact()? {
                break;
            }
        }
        Ok::<_, redb::CompactionError>(())
    }));
    match passes {
        Ok(Ok(())) => {
            let after = std::fs::metadata(file).map_or(0, |m| m.len());
            tracing::info!(file = %file.display(), before = len, after, took_ms = start.elapsed().as_millis() as u64, "compacted the Raft log's file");
        }
        Ok(Err(e)) => tracing::warn!(file = %file.display(), error = %e, "compacting the Raft log's file failed"),
        Err(_) => tracing::warn!(file = %file.display(), "compacting the Raft log's file panicked"),
    }
}

pub(super) fn commit(db: &redb::Database, batch: &[Request]) -> io::Result<()> {
    let txn = db.begin_write().map_err(io_err)?;
    {
        let mut log = txn.open_table(LOG).map_err(io_err)?;
        let mut meta = txn.open_table(META).map_err(io_err)?;
        for op in batch.iter().flat_map(|r| &r.ops) {
            match op {
                Op::Put(i, bytes) => {
                    log.insert(*i, bytes.as_slice()).map_err(io_err)?;
                }
                // One entry at a time from the end: redb's `retain_in` over a
                // range left the file 25 times larger (the test below).
                Op::TruncateFrom(i) => {
                    while log.last().map_err(io_err)?.is_some_and(|(k, _)| k.value() >= *i) {
                        log.pop_last().map_err(io_err)?;
                    }
                }
                Op::PurgeTo(i) => {
                    while log.first().map_err(io_err)?.is_some_and(|(k, _)| k.value() <= *i) {
                        log.pop_first().map_err(io_err)?;
                    }
                }
                Op::Meta(k, v) => {
                    meta.insert(*k, v.as_slice()).map_err(io_err)?;
                }
            }
        }
    }
    txn.commit().map_err(io_err)
}
