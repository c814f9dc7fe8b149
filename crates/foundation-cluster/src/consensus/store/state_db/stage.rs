//! A snapshot from the leader, received straight into a new state
//! database: rows are inserted as its chunks arrive, so the transfer and
//! the install overlap and the state is written once (no file of the
//! snapshot first, read back after). The new database's hash is checked
//! at the end; installing it is a rename over `state.redb`, which is
//! atomic: a crash leaves the old state or the new one, never a mix.

use std::io::Read;
use std::path::PathBuf;

#[allow(clippy::wildcard_imports)] // the state database's private pieces
use super::*;

/// Chunks queued for the staging thread: with the one it is parsing, what
/// a transfer holds in memory.
const QUEUED: usize = 2;

/// A snapshot being received into a new database (a `….part` file under
/// `snapshots/`, which the next open removes if this process dies first).
pub(crate) struct Staging {
    tx: mpsc::Sender<Vec<u8>>,
    done: foundation::rt::JoinHandle<io::Result<Meta>>,
    path: PathBuf,
}

/// A snapshot received whole into a database of its own, its hash checked
/// and made durable: installing it replaces the state's database. The file
/// is removed if it is dropped uninstalled.
pub struct Staged {
    pub(crate) path: PathBuf,
    pub(crate) meta: Meta,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Installed: the file is `state.redb` now, and this finds nothing.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Staged {
    /// The staged state as a snapshot that can be read (or sent on).
    pub(crate) fn open(&self) -> io::Result<DbSnapshot> {
        // Opened, never created: a staged file that is gone is an error.
        let db = redb::Builder::new().set_cache_size(STATE_CACHE_BYTES).open(&self.path).map_err(io_err)?;
        let txn = db.begin_read().map_err(io_err)?;
        Ok(DbSnapshot { txn, meta: self.meta.clone(), _db: Some(db) })
    }
}

impl Staging {
    /// Starts receiving a snapshot into a new database under `dir`, as
    /// `identity`'s state.
    pub(crate) fn start(dir: &SnapshotDir, identity: StoreIdentity) -> io::Result<Self> {
        Self::start_with(dir, identity, WRITEBACK_BYTES)
    }

    /// As [`Staging::start`], the page cache let go every `window` bytes.
    fn start_with(dir: &SnapshotDir, identity: StoreIdentity, window: usize) -> io::Result<Self> {
        let (file, path) = dir.temp("receive")?;
        drop(file);
        let (tx, rx) = mpsc::channel(QUEUED);
        let at = path.clone();
        let done = foundation::rt::spawn_blocking(move || {
            let staged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage(&at, &identity, rx, window)))
                .unwrap_or_else(|_| Err(io_err("the new state database panicked while a snapshot was written into it")));
            if staged.is_err() {
                let _ = std::fs::remove_file(&at);
            }
            staged
        });
        Ok(Self { tx, done, path })
    }

    /// Hands over the next chunk; waits while the database is behind (the
    /// leader waits for the answer: backpressure). An error (a malformed
    /// snapshot: `InvalidData`; a failed write) ends the transfer.
    pub(crate) async fn push(&mut self, data: Vec<u8>) -> io::Result<()> {
        if self.tx.send(data).await.is_ok() {
            return Ok(());
        }
        // The thread stopped early: why.
        match (&mut self.done).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(io::Error::new(io::ErrorKind::InvalidData, "snapshot: bytes after its end")),
            Err(e) => Err(io_err(e)),
        }
    }

    /// The last chunk was handed over: the snapshot, once its hash checked
    /// and it is durable.
    pub(crate) async fn finish(self) -> io::Result<Staged> {
        let Self { tx, done, path } = self;
        drop(tx);
        let meta = done.await.map_err(io_err)??;
        Ok(Staged { path, meta })
    }
}

/// The chunks handed over, read as one stream (on the staging thread);
/// it ends when the sender is dropped.
struct Chunks {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => (self.chunk, self.pos) = (chunk, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes the snapshot read from `rx` into a new database at `path`:
/// rows in transactions without fsync, then what it holds up to, its
/// membership and `identity` in a durable one. Its metadata.
fn stage(path: &Path, identity: &StoreIdentity, rx: mpsc::Receiver<Vec<u8>>, window: usize) -> io::Result<Meta> {
    let db = open_db(path).map_err(io_err)?;
    let (meta, mut rows) = SnapshotReader::open(Chunks { rx, chunk: Vec::new(), pos: 0 })?;
    // What is written is sent to the disk as it comes, and let go of once
    // it is there: the page cache would otherwise hold all of it (on a VM
    // whose freed memory goes back to the host, each new page of it costs
    // a fault there: writing 1 GiB this way was 2.5x slower), and the last
    // commit's fsync would wait for every byte.
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let mut unsent = 0;
    insert_rows(&db, &mut rows, || {
        unsent += INSTALL_TXN_BYTES;
        if unsent >= window {
            unsent = 0;
            write_back(&file)?;
        }
        Ok(())
    })?;
    let txn = db.begin_write().map_err(io_err)?;
    {
        WriteTables::open(&txn)?;
        txn.open_table(META).map_err(io_err)?.insert(IDENTITY, encode(identity)?.as_slice()).map_err(io_err)?;
    }
    write_position(&txn, &meta)?;
    txn.commit().map_err(io_err)?;
    Ok(meta)
}

/// Bytes written between two calls to [`write_back`]: what the page
/// cache holds of a snapshot being received is about two of these.
const WRITEBACK_BYTES: usize = 32 << 20;

/// Waits until what the last call sent to the disk is written, lets go of
/// those pages, and starts writing what was written since. Waiting is the
/// backpressure of a disk slower than the network: the leader waits for
/// the chunk's answer.
fn write_back(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let sync = |flags| {
        // SAFETY: the descriptor is open for as long as `file` is
        // borrowed; the call only reads its arguments.
        let r = unsafe { libc::sync_file_range(fd, 0, 0, flags) };
        if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    };
    sync(libc::SYNC_FILE_RANGE_WAIT_BEFORE)?;
    // Advice: pages that are clean and not mapped are dropped, the rest
    // stay. Its only errors are for descriptors that are not files, and a
    // file system that ignores it just keeps the pages, so it is not
    // checked. SAFETY: as above.
    let _ = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
    sync(libc::SYNC_FILE_RANGE_WRITE)
}

/// Inserts every row of `rows` into `db`, in transactions of
/// [`INSTALL_TXN_BYTES`] without fsync (the caller's last commit is
/// durable), calling `committed` after each.
pub(super) fn insert_rows<R: Read>(
    db: &redb::Database,
    rows: &mut SnapshotReader<R>,
    mut committed: impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    let mut more = true;
    while more {
        let mut txn = db.begin_write().map_err(io_err)?;
        txn.set_durability(redb::Durability::None);
        {
            let mut tables = WriteTables::open(&txn)?;
            let mut bytes = 0;
            while bytes < INSTALL_TXN_BYTES {
                match rows.next_row_ref()? {
                    Some(row) => bytes += tables.insert(row)?,
                    None => {
                        more = false;
                        break;
                    }
                }
            }
        }
        txn.commit().map_err(io_err)?;
        committed()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::types::Command;

    fn fresh(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("foundation-stage-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::server::private_dir(&dir).unwrap();
        dir
    }

    fn value(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    /// Values over a chunk are stored in chunks; replacing one by a shorter
    /// or a small one, or removing it, leaves none of its chunks behind. A
    /// snapshot of that state, received into a new database and installed
    /// in another member's place, is the same state, there after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_in_chunks_survive_changes_and_a_snapshot_staged_and_installed() {
        let (a_dir, b_dir) = (fresh("a"), fresh("b"));
        let (a_id, b_id) = (StoreIdentity { cluster_id: "c".into(), id: 1 }, StoreIdentity { cluster_id: "c".into(), id: 2 });
        let (a, _) = StateDb::open(&a_dir, &a_id, DiskFaults::new(), StorageHealth::default()).unwrap();
        let put = |k: &str, v: Vec<u8>| EntryPayload::Normal(Command::Put { key: k.into(), value: v });
        let mut index = 0;
        let mut next = || {
            index += 1;
            super::super::tests::log_id(index)
        };
        let first = ["big", "shrunk", "gone", "to-small"].map(|k| (next(), put(k, value(300 << 10, 1)), false));
        a.apply(first.into()).await.unwrap();
        a.snapshot().await.unwrap(); // written to the tables
        let second = vec![
            (next(), put("shrunk", value(100 << 10, 2)), false),
            (next(), EntryPayload::Normal(Command::Delete { key: "gone".into() }), false),
            (next(), put("to-small", b"small now".to_vec()), false),
            (next(), put("small", b"s".to_vec()), false),
        ];
        a.apply(second).await.unwrap();
        let (meta, data) = a.snapshot().await.unwrap();
        let want: BTreeMap<String, Vec<u8>> =
            [("big", value(300 << 10, 1)), ("shrunk", value(100 << 10, 2)), ("to-small", b"small now".to_vec()), ("small", b"s".to_vec())]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
        assert_eq!(a.dump().unwrap().kv, want);
        assert_eq!(a.query(&Query::Get("gone".into())).unwrap(), Answer::Value(None));

        // Another member receives it in chunks of 1 MiB, into a new database.
        let (b, _) = StateDb::open(&b_dir, &b_id, DiskFaults::new(), StorageHealth::default()).unwrap();
        let mut staging = Staging::start(&b.snapshots, b_id.clone()).unwrap();
        let mut chunks = data.stream(1 << 20);
        while let Some(chunk) = chunks.next().await {
            staging.push(chunk.unwrap()).await.unwrap();
        }
        let staged = staging.finish().await.unwrap();
        assert_eq!(staged.meta, meta);
        b.install(meta.clone(), SnapshotData::Staged(Arc::new(staged))).await.unwrap();
        assert_eq!(b.dump().unwrap().kv, want);
        assert_eq!(b.query(&Query::Get("big".into())).unwrap(), Answer::Value(Some(value(300 << 10, 1))));
        drop((data, chunks)); // the snapshot's read transaction holds the file open
        for (db, dir) in [(a, &a_dir), (b, &b_dir)] {
            db.close().await;
            drop(db);
            // Only the chunks of the two values stored in chunks are left:
            // 5 for 300 KiB, 2 for 100 KiB.
            let raw = redb::Database::open(dir.join("state.redb")).unwrap();
            let read = raw.begin_read().unwrap();
            let chunks = read.open_table(super::super::tables::CHUNKS).unwrap();
            assert_eq!(redb::ReadableTableMetadata::len(&chunks).unwrap(), 7, "{}", dir.display());
        }
        let (b, opened) = StateDb::open(&b_dir, &b_id, DiskFaults::new(), StorageHealth::default()).unwrap();
        assert_eq!(opened.applied, meta.last_log_id);
        assert_eq!(b.dump().unwrap().kv, want);
        assert!(std::fs::read_dir(b_dir.join("snapshots")).unwrap().next().is_none(), "the staged file became the state");
        b.close().await;
        for dir in [a_dir, b_dir] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
    /// Bytes of the file at `path` in the page cache.
    fn cached_bytes(path: &Path) -> usize {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = usize::try_from(file.metadata().unwrap().len()).unwrap();
        // SAFETY: sysconf only reads its argument.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        let mut resident = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of a file open for the whole
        // block, unmapped before it ends; nothing reads through it, and
        // mincore writes one byte per page into `resident`, which has room.
        unsafe {
            let at = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
            assert_ne!(at, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
            let r = libc::mincore(at, len, resident.as_mut_ptr());
            libc::munmap(at, len);
            assert_eq!(r, 0, "mincore: {}", io::Error::last_os_error());
        }
        resident.iter().filter(|b| *b & 1 == 1).count() * page
    }

    fn on_tmpfs(path: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: statfs reads the NUL-terminated path and writes the
        // struct it is given, which lives across the call.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &raw mut fs) }, 0, "statfs: {}", io::Error::last_os_error());
        fs.f_type == libc::TMPFS_MAGIC
    }

    /// A snapshot received into a new database does not pile up in the
    /// page cache: what was written back is let go every window, so the
    /// cache holds about the last window or two, not the whole state (a
    /// 1 GiB catch-up filled a gigabyte of page cache, and on a VM whose
    /// freed memory goes back to the host, every new page cost a fault).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_staged_lets_go_of_the_page_cache_behind_it() {
        let (a_dir, b_dir) = (fresh("cache-a"), fresh("cache-b"));
        let (a_id, b_id) = (StoreIdentity { cluster_id: "c".into(), id: 1 }, StoreIdentity { cluster_id: "c".into(), id: 2 });
        let (a, _) = StateDb::open(&a_dir, &a_id, DiskFaults::new(), StorageHealth::default()).unwrap();
        // 32 MiB of state, in values of 256 KiB.
        let entries = (1..=128u64)
            .map(|i| {
                let put = Command::Put { key: format!("k{i}"), value: value(256 << 10, i as u8) };
                (super::super::tests::log_id(i), EntryPayload::Normal(put), false)
            })
            .collect();
        a.apply(entries).await.unwrap();
        let (_, data) = a.snapshot().await.unwrap();

        let (b, _) = StateDb::open(&b_dir, &b_id, DiskFaults::new(), StorageHealth::default()).unwrap();
        let window = 4 << 20;
        let mut staging = Staging::start_with(&b.snapshots, b_id.clone(), window).unwrap();
        let mut chunks = data.stream(1 << 20);
        while let Some(chunk) = chunks.next().await {
            staging.push(chunk.unwrap()).await.unwrap();
        }
        let staged = staging.finish().await.unwrap();
        let size = std::fs::metadata(&staged.path).unwrap().len();
        let cached = cached_bytes(&staged.path);
        assert!(size >= 32 << 20, "the staged file holds the state: {size} bytes");
        // On tmpfs the page cache is where the file lives: nothing to let go.
        if !on_tmpfs(&staged.path) {
            assert!(cached <= 3 * window, "{cached} of the staged file's {size} bytes are in the page cache");
        }
        drop((staged, data, chunks));
        for (db, dir) in [(a, a_dir), (b, b_dir)] {
            db.close().await;
            drop(db);
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}
