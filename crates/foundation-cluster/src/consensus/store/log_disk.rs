//! The log's file (`raft.log`, [`LogFile`]) behind one writer thread that
//! alone holds it: it writes every waiting request in one write and one
//! fsync (group commit), reads entries no longer cached, and rewrites the
//! file after a purge that leaves it mostly dead; what a data directory
//! held at start.

use super::log_file::LogFile;
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

impl Request {
    /// Only moves the commit point (written with the next fsync, not one
    /// of its own).
    fn commit_point_only(&self) -> bool {
        !self.ops.is_empty() && self.ops.iter().all(|op| matches!(op, Op::Meta(COMMITTED, _)))
    }
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
    /// The log's file behind its writer thread.
    File(Writer),
    /// A [`MemoryDisk`]: written at once (or after the injected latency),
    /// outlives the node.
    Memory(MemoryDisk, DiskFaults, StorageHealth),
}

/// The log's file behind its writer thread (which also reads entries no
/// longer cached, and alone holds the file, so it can rewrite it), and the
/// highest index known durable (plus one; 0: none).
#[derive(Clone)]
pub(super) struct Writer {
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) durable: Arc<AtomicU64>,
}

impl Disk {
    /// Opens (or creates) the log's file under `dir`. A corrupt file is an
    /// error that names it, and it is left as it was.
    pub(super) fn open(dir: &Path) -> io::Result<(LogFile, Loaded)> {
        crate::server::private_dir(dir)?;
        LogFile::open(dir)
    }

    /// Starts the writer thread of an opened file.
    pub(super) fn start(file: LogFile, last: Option<u64>, faults: DiskFaults, health: StorageHealth) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(DISK_QUEUE);
        let durable = Arc::new(AtomicU64::new(last.map_or(0, |l| l + 1)));
        let writer_durable = durable.clone();
        // A thread of its own: the file's writes block. It exists only with
        // a data directory, which simulation never has (it uses `MemoryDisk`).
        #[allow(clippy::disallowed_methods)]
        std::thread::Builder::new().name("foundation-raft-disk".into()).spawn(move || writer(file, rx, faults, health, writer_durable))?;
        Ok(Self::File(Writer { tx, durable }))
    }

    pub(super) async fn submit(&self, ops: Vec<Op>, done: Done) -> io::Result<()> {
        match self {
            Self::File(r) => r.tx.send(Msg::Write(Request { ops, done })).await.map_err(|_| io_err("the disk writer stopped")),
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

    /// Finishes what is queued, closes the file and stops the writer.
    pub(super) async fn close(&self) {
        if let Self::File(r) = self {
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
    /// The whole log (a `MemoryDisk`'s; a file's stays on disk).
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

/// The writer thread: every waiting request in one write and one fsync.
fn writer(mut file: LogFile, mut rx: mpsc::Receiver<Msg>, faults: DiskFaults, health: StorageHealth, durable: Arc<AtomicU64>) {
    let mut closing = None;
    let mut last_compaction: Option<std::time::Instant> = None;
    // The newest commit point not yet written.
    let mut commit_point = None;
    // When the last batch's write and fsync began.
    let mut last_sync: Option<std::time::Instant> = None;
    loop {
        // A request already waiting when the last batch is done means the
        // disk is what holds the writes back.
        let (first, queued) = match rx.try_recv() {
            Ok(msg) => (msg, true),
            Err(_) => match rx.blocking_recv() {
                Some(msg) => (msg, false),
                None => break,
            },
        };
        let mut batch = Vec::new();
        gather(first, &mut rx, &mut batch, &file, &mut closing);
        let to_sync = batch.iter().any(|r| !r.commit_point_only());
        if let Some(wait) = sync_wait(queued && to_sync && closing.is_none(), last_sync, std::time::Instant::now()) {
            std::thread::sleep(wait);
            if let Ok(next) = rx.try_recv() {
                gather(next, &mut rx, &mut batch, &file, &mut closing);
            }
        }
        // A commit point alone is not worth an fsync (Raft recomputes a
        // lost one): it goes first in the next write made durable anyway,
        // or at close. (The leader's commit point moves after nearly every
        // append: alone, it took half the leader's fsyncs.)
        let (alone, mut batch): (Vec<_>, Vec<_>) = batch.into_iter().partition(Request::commit_point_only);
        for Request { mut ops, done } in alone {
            commit_point = ops.pop().or(commit_point);
            done.complete(Ok(()));
        }
        if batch.is_empty() && closing.is_none() {
            continue;
        }
        if let Some(op) = commit_point.take() {
            batch.insert(0, Request { ops: vec![op], done: Done::Ignore });
        }
        if batch.is_empty() {
            break;
        }
        last_sync = Some(std::time::Instant::now());
        let result = match faults.before_batch() {
            Err(e) => Err(e.to_string()),
            Ok(latency) => {
                if !latency.is_zero() {
                    std::thread::sleep(latency);
                }
                file.write(&batch).map_err(|e| e.to_string())
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
            file.compact_if_sparse();
        }
        for r in batch {
            r.done.complete(result.clone().map_err(io_err));
        }
        if closing.is_some() {
            break;
        }
    }
    rx.close();
    drop(file);
    if let Some(ack) = closing {
        let _ = ack.send(());
    }
}

/// Adds `first` and every request already waiting (up to 1024) to
/// `batch`; answers reads on the way, and stops at a close.
fn gather(first: Msg, rx: &mut mpsc::Receiver<Msg>, batch: &mut Vec<Request>, file: &LogFile, closing: &mut Option<oneshot::Sender<()>>) {
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        match msg {
            Msg::Write(r) => batch.push(r),
            Msg::Read(from, to, reply) => {
                let _ = reply.send(file.read(from, to));
            }
            Msg::Close(ack) => {
                *closing = Some(ack);
                break;
            }
        }
        if batch.len() < 1024 {
            next = rx.try_recv().ok();
        }
    }
}

/// How long the writer waits, gathering, before the next fsync: until
/// [`SYNC_GAP`] after the last one began, and only when `backlog` (requests
/// queued while the last batch was written, with something to make durable).
/// An idle writer never waits, so a lone write costs one fsync and no more.
fn sync_wait(backlog: bool, last_sync: Option<std::time::Instant>, now: std::time::Instant) -> Option<std::time::Duration> {
    let since = now.saturating_duration_since(last_sync?);
    (backlog && since < SYNC_GAP).then(|| SYNC_GAP - since)
}

/// Least time between the starts of two fsyncs while writes queue behind
/// them. A device has a budget of flushes: three writers flushing 4 KiB
/// at once on this machine's virtual disk (2,900 fsyncs a second each)
/// are all stalled for 15-20 ms about every 100 ms, while two at the same
/// total rate are not; cloud volumes cap their operations too. Without
/// it, a leader under 64 clients made an fsync every 7 entries (2,700 to
/// 3,400 per 32,000; a follower 540-830), the stalls came, and
/// `consensus.commit_p99` was 12-15 ms; with it, 5-8 ms (README,
/// "Benchmarks").
const SYNC_GAP: std::time::Duration = std::time::Duration::from_micros(600);

/// Least time between two rewrites of the log's file.
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{SYNC_GAP, sync_wait};

    #[test]
    fn only_a_backlog_waits_and_never_past_the_gap() {
        let last = Instant::now();
        let soon = last + Duration::from_micros(100);
        // An idle writer (nothing queued behind the last fsync) never waits.
        assert_eq!(sync_wait(false, Some(last), soon), None);
        // Nor does the first batch.
        assert_eq!(sync_wait(true, None, soon), None);
        // A backlog waits out the rest of the gap, and no more.
        assert_eq!(sync_wait(true, Some(last), soon), Some(SYNC_GAP - Duration::from_micros(100)));
        assert_eq!(sync_wait(true, Some(last), last + SYNC_GAP), None);
        assert_eq!(sync_wait(true, Some(last), last + 2 * SYNC_GAP), None);
    }
}
