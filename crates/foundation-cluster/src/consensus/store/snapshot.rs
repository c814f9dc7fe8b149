//! Snapshots as a stream of rows: how one is written, read back, kept (in
//! memory, as a read transaction of the state database, or as a database
//! received from a leader) and streamed in chunks.
//!
//! # Format
//! `FNDSNAP1`, then `[u32 len][postcard SnapshotMeta]`, then the rows, each
//! `[u32 len][postcard Row]`, then `[u32 0]`, then the BLAKE3 hash of every
//! byte before it. A snapshot is written and read one row at a time, so
//! neither end holds the state whole; a truncated, corrupt or foreign file
//! is an error when read, never a panic.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::alias::SnapshotMetaOf;
use serde::{Deserialize, Serialize};

use crate::consensus::types::{LockState, State, TypeConfig};

const MAGIC: &[u8; 8] = b"FNDSNAP1";
const HASH_BYTES: usize = 32;
/// Largest row (or header) a snapshot may hold: a key and a value are at
/// most a proposal, itself at most half a frame.
pub(crate) const RECORD_BYTES_MAX: usize = 64 << 20;

pub(crate) type Meta = SnapshotMetaOf<TypeConfig>;

/// One row of the replicated state.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Row {
    Kv(String, #[serde(with = "crate::consensus::types::bytes")] Vec<u8>),
    Lock(String, LockState),
    Barrier(String, BTreeSet<String>),
}

fn invalid(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: {why}"))
}

/// Writes a snapshot, one row at a time.
pub(crate) struct SnapshotWriter<W: Write> {
    out: W,
    hash: blake3::Hasher,
}

impl<W: Write> SnapshotWriter<W> {
    pub(crate) fn new(out: W, meta: &Meta) -> io::Result<Self> {
        let mut w = Self { out, hash: blake3::Hasher::new() };
        w.put(MAGIC)?;
        w.record(&postcard::to_stdvec(meta).map_err(invalid)?)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(invalid(format!("a row of {} bytes is over the limit of {RECORD_BYTES_MAX}", bytes.len())));
        }
        self.put(&(bytes.len() as u32).to_le_bytes())?;
        self.put(bytes)
    }

    pub(crate) fn row(&mut self, row: &RowRef<'_>) -> io::Result<()> {
        self.record(&postcard::to_stdvec(row).map_err(invalid)?)
    }

    /// Ends the snapshot; returns what it was written to.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.put(&0u32.to_le_bytes())?;
        let hash = self.hash.finalize();
        self.out.write_all(hash.as_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One row read in place: its key and value borrow the reader's buffer
/// (the same encoding as [`Row`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RowRef<'a> {
    Kv(&'a str, #[serde(serialize_with = "bytes_ref")] &'a [u8]),
    Lock(&'a str, LockState),
    Barrier(&'a str, BTreeSet<String>),
}

fn bytes_ref<S: serde::Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

impl RowRef<'_> {
    pub(crate) fn into_row(self) -> Row {
        match self {
            Self::Kv(k, v) => Row::Kv(k.to_owned(), v.to_vec()),
            Self::Lock(k, l) => Row::Lock(k.to_owned(), l),
            Self::Barrier(k, b) => Row::Barrier(k.to_owned(), b),
        }
    }
}

/// Reads a snapshot, one row at a time; checks its hash at the end.
pub(crate) struct SnapshotReader<R: Read> {
    inp: R,
    hash: blake3::Hasher,
    done: bool,
    /// The last record read (it only grows: rows are read into it).
    buf: Vec<u8>,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the header; the rows follow.
    pub(crate) fn open(inp: R) -> io::Result<(Meta, Self)> {
        let mut r = Self { inp, hash: blake3::Hasher::new(), done: false, buf: Vec::new() };
        let mut magic = [0; 8];
        r.take(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid("not a snapshot (wrong magic)"));
        }
        let len = r.record()?.ok_or_else(|| invalid("no header"))?;
        let meta = postcard::from_bytes(&r.buf[..len]).map_err(invalid)?;
        Ok((meta, r))
    }

    fn take(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inp.read_exact(buf).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { invalid("truncated") } else { e })?;
        self.hash.update(buf);
        Ok(())
    }

    /// Reads the next record into `buf`; its length (`None`: the end).
    fn record(&mut self) -> io::Result<Option<usize>> {
        let mut len = [0; 4];
        self.take(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 {
            return Ok(None);
        }
        if len > RECORD_BYTES_MAX {
            return Err(invalid(format!("a row of {len} bytes is over the limit of {RECORD_BYTES_MAX}")));
        }
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let read = self.take(&mut buf[..len]);
        self.buf = buf;
        read.map(|()| Some(len))
    }

    /// The next row; `None` at the end, once the hash checked.
    pub(crate) fn next_row(&mut self) -> io::Result<Option<Row>> {
        Ok(self.next_row_ref()?.map(RowRef::into_row))
    }

    /// The next row, read in place (no copy of its key or value); `None`
    /// at the end, once the hash checked.
    pub(crate) fn next_row_ref(&mut self) -> io::Result<Option<RowRef<'_>>> {
        if self.done {
            return Ok(None);
        }
        match self.record()? {
            Some(len) => postcard::from_bytes(&self.buf[..len]).map(Some).map_err(invalid),
            None => {
                self.done = true;
                let mut hash = [0; HASH_BYTES];
                self.inp.read_exact(&mut hash).map_err(|_| invalid("truncated before its hash"))?;
                if hash != *self.hash.finalize().as_bytes() {
                    return Err(invalid("its hash does not match: it is corrupt"));
                }
                let mut more = [0; 1];
                if self.inp.read(&mut more)? != 0 {
                    return Err(invalid("bytes after its end"));
                }
                Ok(None)
            }
        }
    }
}

/// Encodes a whole in-memory state.
pub(crate) fn encode_state(meta: &Meta, state: &State) -> io::Result<Vec<u8>> {
    let mut w = SnapshotWriter::new(Vec::new(), meta)?;
    for (k, v) in &state.kv {
        w.row(&RowRef::Kv(k, v))?;
    }
    for (k, l) in &state.locks {
        w.row(&RowRef::Lock(k, l.clone()))?;
    }
    for (k, b) in &state.barriers {
        w.row(&RowRef::Barrier(k, b.clone()))?;
    }
    w.finish()
}

/// Decodes a whole snapshot into an in-memory state.
pub(crate) fn decode_state(bytes: &[u8]) -> io::Result<(Meta, State)> {
    let (meta, mut r) = SnapshotReader::open(bytes)?;
    let mut state = State::default();
    while let Some(row) = r.next_row()? {
        match row {
            Row::Kv(k, v) => state.kv.insert(k, v).map(drop),
            Row::Lock(k, l) => state.locks.insert(k, l).map(drop),
            Row::Barrier(k, b) => state.barriers.insert(k, b).map(drop),
        };
    }
    Ok((meta, state))
}

/// A snapshot's bytes: in memory, a file (an install of an older kind cut
/// short), a read transaction of the state database (encoded as it is
/// sent), or a database received from a leader. Cheap to clone.
#[derive(Clone)]
pub enum SnapshotData {
    /// Held in memory (storage without a data directory).
    Bytes(Arc<Vec<u8>>),
    /// A file in the data directory's `snapshots/`.
    File(Arc<SnapshotFile>),
    /// The state database as of one read transaction.
    Db(Arc<super::state_db::DbSnapshot>),
    /// Received from a leader into a database of its own, which installing
    /// makes the state's.
    Staged(Arc<super::state_db::Staged>),
}

/// An open snapshot file.
pub struct SnapshotFile {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "SnapshotData::Bytes({} bytes)", b.len()),
            Self::File(s) => write!(f, "SnapshotData::File({})", s.path.display()),
            Self::Db(_) => f.write_str("SnapshotData::Db"),
            Self::Staged(s) => write!(f, "SnapshotData::Staged({})", s.path.display()),
        }
    }
}

/// Chunks held in flight between a snapshot's producer and its sender.
const CHUNKS_IN_FLIGHT: usize = 2;

/// A snapshot's bytes in chunks, produced as they are taken: a file is
/// read and a database encoded on the blocking pool, at most
/// [`CHUNKS_IN_FLIGHT`] chunks ahead of the sender.
pub(crate) enum SnapshotStream {
    Bytes(Arc<Vec<u8>>, usize, usize),
    Produced(tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>),
}

impl SnapshotStream {
    /// The next chunk; `None` after the last.
    pub(crate) async fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        match self {
            Self::Bytes(b, pos, chunk) => {
                if *pos >= b.len() {
                    return None;
                }
                let end = (*pos + *chunk).min(b.len());
                let part = b[*pos..end].to_vec();
                *pos = end;
                Some(Ok(part))
            }
            Self::Produced(rx) => rx.recv().await,
        }
    }
}

/// Writes a snapshot's bytes into a [`ChunkSink`] (on the blocking pool).
type Producer = Box<dyn FnOnce(&mut ChunkSink) -> io::Result<()> + Send>;

/// Cuts what is written into chunks for a [`SnapshotStream`].
struct ChunkSink {
    buf: Vec<u8>,
    chunk: usize,
    tx: tokio::sync::mpsc::Sender<io::Result<Vec<u8>>>,
}

impl ChunkSink {
    fn emit(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk));
        self.tx.blocking_send(Ok(full)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the snapshot transfer ended"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == self.chunk {
            self.emit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotData {
    /// Its bytes in chunks of `chunk`.
    pub(crate) fn stream(&self, chunk: usize) -> SnapshotStream {
        let chunk = chunk.max(1);
        let produce = |work: Producer| {
            let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
            // Detached: it ends when the snapshot is produced or its stream
            // is dropped (the next send fails).
            drop(foundation::rt::spawn_blocking(move || {
                let mut sink = ChunkSink { buf: Vec::with_capacity(chunk), chunk, tx: tx.clone() };
                let done = work(&mut sink).and_then(|()| if sink.buf.is_empty() { Ok(()) } else { sink.emit() });
                if let Err(e) = done {
                    let _ = tx.blocking_send(Err(e));
                }
            }));
            SnapshotStream::Produced(rx)
        };
        match self {
            Self::Bytes(b) => SnapshotStream::Bytes(b.clone(), 0, chunk),
            Self::File(_) => {
                let mut reader = self.reader();
                produce(Box::new(move |sink| io::copy(&mut reader, sink).map(drop)))
            }
            Self::Db(db) => {
                let db = db.clone();
                produce(Box::new(move |sink| db.write_to(sink)))
            }
            Self::Staged(staged) => {
                let staged = staged.clone();
                produce(Box::new(move |sink| staged.open()?.write_to(sink)))
            }
        }
    }

    /// A reader of the whole snapshot from its start (a file's reads are
    /// positioned: readers do not share an offset). A database snapshot is
    /// encoded whole, on the calling thread, into memory.
    pub(crate) fn reader(&self) -> Box<dyn Read + Send> {
        match self {
            Self::Bytes(b) => Box::new(io::Cursor::new(Shared(b.clone()))),
            Self::File(s) => Box::new(BufReader::with_capacity(1 << 20, FileAt { file: s.clone(), pos: 0 })),
            Self::Db(db) => encoded(|bytes| db.write_to(bytes)),
            Self::Staged(staged) => encoded(|bytes| staged.open()?.write_to(bytes)),
        }
    }
}

/// A database snapshot encoded whole, as a reader (its error, if it failed).
fn encoded(encode: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> Box<dyn Read + Send> {
    let mut bytes = Vec::new();
    match encode(&mut bytes) {
        Ok(()) => Box::new(io::Cursor::new(bytes)),
        Err(e) => Box::new(Failed(Some(e))),
    }
}

struct Failed(Option<io::Error>);

impl Read for Failed {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self.0.take().unwrap_or_else(|| invalid("unreadable")))
    }
}

struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

struct FileAt {
    file: Arc<SnapshotFile>,
    pos: u64,
}

impl Read for FileAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Where a data directory keeps snapshot files: the databases being
/// received (`receive-….part`, removed at open), and a snapshot file being
/// installed by an older version (`installing.snap`, kept until the state
/// database holds it, so an install cut short is done again at the next
/// start).
pub(crate) struct SnapshotDir {
    dir: PathBuf,
}

/// Makes temporary names unique within the process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

impl SnapshotDir {
    /// The snapshots of the data directory `data`, as they are.
    pub(crate) fn at(data: &Path) -> Self {
        Self { dir: data.join("snapshots") }
    }

    /// Opens (or makes) `data/snapshots/`; removes what an interrupted
    /// transfer left.
    pub(crate) fn open(data: &Path) -> io::Result<Self> {
        let me = Self::at(data);
        crate::server::private_dir(&me.dir)?;
        for entry in std::fs::read_dir(&me.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(me)
    }

    fn installing_path(&self) -> PathBuf {
        self.dir.join("installing.snap")
    }

    /// The snapshot being installed, if an install was cut short: its
    /// metadata (read from its header) and the open file.
    pub(crate) fn installing(&self) -> io::Result<Option<(Meta, SnapshotData)>> {
        let path = self.installing_path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let (meta, _) = SnapshotReader::open(BufReader::new(file.try_clone()?))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        Ok(Some((meta, SnapshotData::File(Arc::new(SnapshotFile { file, path })))))
    }

    /// A new temporary file (`…part`), private to this process.
    pub(crate) fn temp(&self, what: &str) -> io::Result<(File, PathBuf)> {
        use std::os::unix::fs::OpenOptionsExt;
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{what}-{}-{n}.part", std::process::id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
        Ok((file, path))
    }

    /// Makes a received, synced file the snapshot being installed.
    pub(crate) fn adopt(&self, path: &Path) -> io::Result<()> {
        let installing = self.installing_path();
        if path != installing {
            std::fs::rename(path, &installing)?;
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The install is done: the state database holds the snapshot.
    pub(crate) fn installed(&self) -> io::Result<()> {
        match std::fs::remove_file(self.installing_path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let mut s = State::default();
        s.kv.insert("a".into(), b"1".to_vec());
        s.kv.insert("b".into(), vec![7; 1000]);
        s.locks.insert("l".into(), LockState { holder: "h".into(), token: 3, expires_ms: 9 });
        s.barriers.insert("b".into(), ["x".to_owned(), "y".to_owned()].into());
        s
    }

    #[test]
    fn a_state_survives_its_encoding_and_damage_is_an_error() {
        let meta = Meta::default();
        let bytes = encode_state(&meta, &state()).unwrap();
        let (m, s) = decode_state(&bytes).unwrap();
        assert_eq!((m, s), (meta, state()));
        // Every truncation and every flipped byte is refused.
        for cut in 0..bytes.len() {
            assert!(decode_state(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode_state(&bad).is_err(), "flipped byte {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_state(&longer).is_err(), "a byte more");
    }
}
