//! The log's file (`raft.log`): an append-only journal of [`Op`]s. A batch
//! of requests is one contiguous write into space already filled with
//! zeros, then one `fdatasync`: one or two pages per commit, and no file
//! metadata to journal (redb's copy-on-write B-tree wrote about eight
//! pages per commit, and three members on one disk made each fsync cost
//! four times what it costs alone).
//!
//! # Format
//! A 32-byte header (magic, version, checksum), then records:
//! `len: u32, seq: u64, check: u64, body[len]`, little-endian. `seq` is the
//! batch the record was written in: each batch is one more than the last
//! (a file starts anywhere), and a batch is written only after the one
//! before it is durable. `check` is the first 8 bytes of BLAKE3 over `len`,
//! `seq` and the body. The body is one op: `1 index entry` (a log entry,
//! postcard), `2 index` (truncate from), `3 index` (purge to),
//! `4 key_len key value` (a metadata value: the vote, the commit point...).
//! Past the last record the file holds zeros: it grows by writing zeros,
//! made durable before any record goes there.
//!
//! # Reading it back
//! At start the file is read once, in order: the ops replayed give the
//! metadata and each live entry's offset (8 bytes per entry in memory;
//! entries are read back from the file when they are no longer cached).
//! The log ends at the first record that is not whole. What follows it
//! decides what that was:
//! - zeros: the end;
//! - a whole record of a batch two or more after the last whole one: that
//!   later batch was written after this one was durable, so this one was
//!   acknowledged and is corrupt: the file is refused;
//! - the file's end inside a record: the file never ends there (it grows
//!   by zeros made durable first), so it was cut: refused;
//! - otherwise a write that did not finish (a crash during the last
//!   batch, never acknowledged), at most one batch long: those bytes are
//!   zeroed before the next write, and the log goes on from there.
//!
//! A purge that leaves the file mostly dead rewrites it (the live entries
//! and the metadata into `raft.log.new`, made durable, renamed over it).

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::log_disk::{Loaded, Op, Request};
use super::{COMMITTED, Entry, IDENTITY, PARTICIPANTS, PURGED, VOTE, decode};

const MAGIC: &[u8; 16] = b"foundation raft\n";
const VERSION: u32 = 1;
const HEADER: u64 = 32;
/// A record's `len`, `seq` and `check`.
const RECORD_HEADER: usize = 20;
/// The largest record body (an entry is at most a frame).
const RECORD_MAX: usize = 1 << 30;
/// Bytes written between two fsyncs at most (a larger batch is written in
/// parts, each durable before the next; one record larger than this is a
/// part of its own). A write that did not finish is at most this long.
pub(super) const BATCH_WRITE_MAX: usize = 4 << 20;
/// The file grows by this much, in zeros written and made durable (records
/// then overwrite them: an fsync writes data only, never the file's size
/// or extents). A new file starts with it, so a write waits for growth
/// once per this much of log. Growing in small steps on the write path
/// (by 256 KiB of zeros, or by `fallocate` with zeros written 64 KiB
/// ahead) put a journal commit in a write every few hundred entries, and
/// the commit p99 rose from 6-8 to 11-14 ms.
const GROW: u64 = 8 << 20;
/// A log entry's record with a body larger than this is not read whole
/// at start (see `LogFile::scan`)...
const SKIM_BYTES: usize = 4 << 10;
/// ... only its op and index.
const SKIMMED_PREFIX: usize = 9;
/// A file smaller than this is never rewritten.
const COMPACT_FILE_BYTES: u64 = 16 << 20;
/// Batches a whole record found past the end may be ahead of the last
/// whole one and still be told apart from noise.
const SEQ_AHEAD_MAX: u64 = 1 << 32;

const PUT: u8 = 1;
const TRUNCATE: u8 = 2;
const PURGE: u8 = 3;
const META: u8 = 4;

fn check(len: u32, seq: u64, body: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(body);
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

fn header() -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..16].copy_from_slice(MAGIC);
    h[16..20].copy_from_slice(&VERSION.to_le_bytes());
    let sum = blake3::hash(&h[..24]);
    h[24..].copy_from_slice(&sum.as_bytes()[..8]);
    h
}

/// Appends `op` framed as a record of batch `seq` to `buf`.
fn frame(buf: &mut Vec<u8>, seq: u64, op: &Op) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER]);
    match op {
        Op::Put(i, bytes) => {
            buf.push(PUT);
            buf.extend_from_slice(&i.to_le_bytes());
            buf.extend_from_slice(bytes);
        }
        Op::TruncateFrom(i) => {
            buf.push(TRUNCATE);
            buf.extend_from_slice(&i.to_le_bytes());
        }
        Op::PurgeTo(i) => {
            buf.push(PURGE);
            buf.extend_from_slice(&i.to_le_bytes());
        }
        Op::Meta(k, v) => meta_body(buf, k, v),
    }
    frame_at(buf, start, seq);
}

fn meta_body(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.push(META);
    buf.push(u8::try_from(key.len()).expect("a metadata key under 256 bytes"));
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(value);
}

/// Fills in the header of the record that starts at `start` and runs to
/// the end of `buf`.
fn frame_at(buf: &mut [u8], start: usize, seq: u64) {
    let len = u32::try_from(buf.len() - start - RECORD_HEADER).expect("a record under 4 GiB");
    let sum = check(len, seq, &buf[start + RECORD_HEADER..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 12].copy_from_slice(&seq.to_le_bytes());
    buf[start + 12..start + 20].copy_from_slice(&sum.to_le_bytes());
}

/// A record's header, as read.
#[derive(Clone, Copy)]
struct RecordHeader {
    len: u32,
    seq: u64,
    check: u64,
}

impl RecordHeader {
    fn parse(b: &[u8]) -> Self {
        Self {
            len: u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
            seq: u64::from_le_bytes(b[4..12].try_into().expect("8 bytes")),
            check: u64::from_le_bytes(b[12..20].try_into().expect("8 bytes")),
        }
    }
}

/// One decoded record body.
enum Body<'a> {
    Put(u64, &'a [u8]),
    Truncate(u64),
    Purge(u64),
    Meta(&'a str, &'a [u8]),
}

fn parse_body(b: &[u8]) -> Option<Body<'_>> {
    let (&tag, rest) = b.split_first()?;
    let index = || rest.get(..8).map(|i| u64::from_le_bytes(i.try_into().expect("8 bytes")));
    match tag {
        PUT => Some(Body::Put(index()?, &rest[8..])),
        TRUNCATE => Some(Body::Truncate(index()?)),
        PURGE => Some(Body::Purge(index()?)),
        META => {
            let (&n, rest) = rest.split_first()?;
            let key = std::str::from_utf8(rest.get(..n as usize)?).ok()?;
            Some(Body::Meta(key, &rest[n as usize..]))
        }
        _ => None,
    }
}

/// What a replay found: where the log ends, the header there when it is
/// not zeros, the last batch, and the entries of the last batch whose
/// bodies were not read.
struct Scanned {
    end: u64,
    bad: Option<RecordHeader>,
    last_seq: Option<u64>,
    skimmed: Vec<u64>,
}

/// The live entries' offsets in the file: `offsets[k]` is entry `first + k`.
#[derive(Default)]
struct Index {
    first: u64,
    offsets: VecDeque<u64>,
}

impl Index {
    fn next(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    fn put(&mut self, i: u64, offset: u64) {
        if i != self.next() || self.offsets.is_empty() {
            self.truncate(i);
            if self.offsets.is_empty() {
                self.first = i;
            }
        }
        self.offsets.push_back(offset);
    }

    fn truncate(&mut self, from: u64) {
        if from <= self.first {
            self.offsets.clear();
        } else {
            self.offsets.truncate((from - self.first) as usize);
        }
    }

    fn purge(&mut self, to: u64) {
        if to + 1 >= self.next() {
            self.offsets.clear();
            self.first = to + 1;
        } else if to >= self.first {
            self.offsets.drain(..(to + 1 - self.first) as usize);
            self.first = to + 1;
        }
    }

    fn get(&self, i: u64) -> Option<u64> {
        i.checked_sub(self.first).and_then(|k| self.offsets.get(k as usize)).copied()
    }
}

/// The log's file, open for appending.
pub(super) struct LogFile {
    file: File,
    path: PathBuf,
    /// The file's length: zeros from `tail` to here.
    len: u64,
    /// Where the next record goes.
    tail: u64,
    /// The last batch written (the next is one more).
    seq: u64,
    index: Index,
    metas: BTreeMap<String, Vec<u8>>,
    /// What a write that did not finish left (`tail..end`): zeroed before
    /// the next write.
    torn: Option<u64>,
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{} is corrupt: {why}", path.display()))
}

impl LogFile {
    /// Opens `dir/raft.log` (created when missing) and reads it back. A
    /// corrupt file is an error that names it, and is left as it was.
    pub(super) fn open(dir: &Path) -> io::Result<(Self, Loaded)> {
        let path = dir.join("raft.log");
        if !path.exists() {
            super::migrate::from_redb(dir, &path)?;
        }
        if !path.exists() {
            // Written aside and renamed: a crash while creating it leaves
            // no file, not a file without its header.
            let tmp = path.with_extension("log.new");
            write_new(&tmp, |_| Ok(()))?;
            std::fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()?;
        }
        let file = File::options().read(true).write(true).open(&path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let mut log = Self { file, path, len: 0, tail: HEADER, seq: 0, index: Index::default(), metas: BTreeMap::new(), torn: None };
        log.replay()?;
        let loaded = log.loaded()?;
        Ok((log, loaded))
    }

    /// Reads the file: metadata, the entries' offsets, where it ends.
    fn replay(&mut self) -> io::Result<()> {
        self.len = self.file.metadata()?.len();
        let mut head = [0u8; HEADER as usize];
        if self.file.read_exact_at(&mut head, 0).is_err() || head != header() {
            return Err(corrupt(&self.path, "its header is damaged, or it is not a Foundation Raft log"));
        }
        let Scanned { mut end, mut bad, mut last_seq, skimmed } = self.scan(None)?;
        // Entries read only in part: those of the last batch are checked
        // now (a write that did not finish may have torn them); the others
        // when they are read.
        for at in skimmed {
            if !self.whole_at(at)? {
                self.index = Index::default();
                self.metas.clear();
                Scanned { end, bad, last_seq, .. } = self.scan(Some(at))?;
                break;
            }
        }
        self.tail = end;
        self.seq = last_seq.unwrap_or(0);
        self.after_end(end, last_seq, bad)
    }

    /// Replays the records up to the first that is not whole (or up to
    /// `stop`). An entry's body over [`SKIM_BYTES`] that follows the entry
    /// before it is not read whole (1 GiB of them took 490 ms to read and
    /// hash at every start).
    fn scan(&mut self, stop: Option<u64>) -> io::Result<Scanned> {
        let mut r = io::BufReader::with_capacity(1 << 20, &self.file);
        io::Seek::seek(&mut r, io::SeekFrom::Start(HEADER))?;
        let mut pos = HEADER;
        let mut last_seq: Option<u64> = None;
        let mut skimmed = Vec::new();
        let mut body = Vec::new();
        // The first record that is not whole, and its header.
        let (end, bad) = loop {
            let mut h = [0u8; RECORD_HEADER];
            if pos + RECORD_HEADER as u64 > self.len {
                let mut rest = Vec::new();
                r.read_to_end(&mut rest)?;
                if rest.iter().any(|&b| b != 0) {
                    return Err(corrupt(&self.path, format!("it ends inside the record at byte {pos}: the file was cut short")));
                }
                break (pos, None);
            }
            r.read_exact(&mut h)?;
            let rh = RecordHeader::parse(&h);
            if stop == Some(pos) {
                break (pos, Some(rh));
            }
            if h == [0u8; RECORD_HEADER] {
                break (pos, None);
            }
            let whole = rh.len as usize <= RECORD_MAX
                && pos + (RECORD_HEADER as u64) + u64::from(rh.len) <= self.len
                && last_seq.is_none_or(|s| rh.seq == s || rh.seq == s + 1);
            if !whole {
                break (pos, Some(rh));
            }
            if last_seq != Some(rh.seq) {
                skimmed.clear();
            }
            body.resize((rh.len as usize).min(SKIMMED_PREFIX), 0);
            r.read_exact(&mut body)?;
            let next = self.index.next();
            let skim = rh.len as usize > SKIM_BYTES
                && !self.index.offsets.is_empty()
                && matches!(parse_body(&body), Some(Body::Put(i, _)) if i == next);
            if skim {
                r.seek_relative(i64::from(rh.len) - SKIMMED_PREFIX as i64)?;
                self.index.put(next, pos);
                skimmed.push(pos);
            } else {
                let prefix = body.len();
                body.resize(rh.len as usize, 0);
                r.read_exact(&mut body[prefix..])?;
                let Some(op) = (check(rh.len, rh.seq, &body) == rh.check).then(|| parse_body(&body)).flatten() else {
                    break (pos, Some(rh));
                };
                match op {
                    Body::Put(i, _) => self.index.put(i, pos),
                    Body::Truncate(i) => self.index.truncate(i),
                    Body::Purge(i) => self.index.purge(i),
                    Body::Meta(k, v) => drop(self.metas.insert(k.to_owned(), v.to_vec())),
                }
            }
            last_seq = Some(rh.seq);
            pos += RECORD_HEADER as u64 + u64::from(rh.len);
        };
        Ok(Scanned { end, bad, last_seq, skimmed })
    }

    /// Whether the record at `at` is whole (its check matches).
    fn whole_at(&self, at: u64) -> io::Result<bool> {
        let mut h = [0u8; RECORD_HEADER];
        self.file.read_exact_at(&mut h, at)?;
        let rh = RecordHeader::parse(&h);
        let mut body = vec![0u8; rh.len as usize];
        self.file.read_exact_at(&mut body, at + RECORD_HEADER as u64)?;
        Ok(check(rh.len, rh.seq, &body) == rh.check)
    }

    /// What the file holds, as the store loads it.
    fn loaded(&self) -> io::Result<Loaded> {
        let meta = |key: &str| self.metas.get(key);
        let mut loaded = Loaded {
            identity: meta(IDENTITY).map(|b| decode(b)).transpose()?,
            vote: meta(VOTE).map(|b| decode(b)).transpose()?,
            committed: meta(COMMITTED).map(|b| decode(b)).transpose()?,
            purged: meta(PURGED).map(|b| decode(b)).transpose()?,
            participants: meta(PARTICIPANTS).map(|b| decode(b)).transpose()?.unwrap_or_default(),
            ..Loaded::default()
        };
        if let Some(last) = self.index.next().checked_sub(1).filter(|_| !self.index.offsets.is_empty()) {
            loaded.log_last = self.read(last, last + 1)?.pop().map(|e| e.log_id);
        }
        Ok(loaded)
    }

    /// The entry at `offset`, which must be entry `i`.
    fn read_at(&self, offset: u64, i: u64) -> io::Result<Entry> {
        let mut h = [0u8; RECORD_HEADER];
        self.file.read_exact_at(&mut h, offset)?;
        let rh = RecordHeader::parse(&h);
        if rh.len as usize > RECORD_MAX {
            return Err(corrupt(&self.path, format!("the record of entry {i} at byte {offset} has a length of {}", rh.len)));
        }
        let mut body = vec![0u8; rh.len as usize];
        self.file.read_exact_at(&mut body, offset + RECORD_HEADER as u64)?;
        match (check(rh.len, rh.seq, &body) == rh.check).then(|| parse_body(&body)).flatten() {
            Some(Body::Put(found, bytes)) if found == i => decode(bytes),
            _ => Err(corrupt(&self.path, format!("the record of entry {i} at byte {offset} is damaged"))),
        }
    }

    /// Entries `from..to` that the log holds.
    pub(super) fn read(&self, from: u64, to: u64) -> io::Result<Vec<Entry>> {
        (from.max(self.index.first)..to.min(self.index.next()))
            .map(|i| self.read_at(self.index.get(i).expect("an index the log holds"), i))
            .collect()
    }

    /// Writes every op of `batch` and makes them durable: one write and one
    /// fsync per [`BATCH_WRITE_MAX`] of records.
    pub(super) fn write(&mut self, batch: &[Request]) -> io::Result<()> {
        if let Some(end) = self.torn {
            self.zero(self.tail, end)?;
            self.file.sync_data()?;
            self.torn = None;
        }
        let mut buf = Vec::new();
        // Each op, and where its record starts in `buf`.
        let mut written: Vec<(&Op, u64)> = Vec::new();
        let ops = batch.iter().flat_map(|r| &r.ops);
        let mut ops = ops.peekable();
        while let Some(op) = ops.next() {
            let at = buf.len() as u64;
            frame(&mut buf, self.seq + 1, op);
            written.push((op, at));
            if buf.len() >= BATCH_WRITE_MAX || ops.peek().is_none() {
                self.append(&buf)?;
                for (op, at) in written.drain(..) {
                    self.apply(op, self.tail + at);
                }
                self.tail += buf.len() as u64;
                self.seq += 1;
                buf.clear();
            }
        }
        Ok(())
    }

    /// `buf` at the tail, durable; the tail does not move.
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let end = self.tail + buf.len() as u64;
        if end > self.len {
            // Zeros first, durable, so the file never ends inside a record.
            let len = (end + GROW).next_multiple_of(4096);
            self.zero(self.len, len)?;
            self.file.sync_data()?;
            self.len = len;
        }
        self.file.write_all_at(buf, self.tail)?;
        self.file.sync_data()
    }

    fn zero(&self, from: u64, to: u64) -> io::Result<()> {
        let zeros = vec![0u8; (to - from).min(1 << 20) as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op, offset: u64) {
        match op {
            Op::Put(i, _) => self.index.put(*i, offset),
            Op::TruncateFrom(i) => self.index.truncate(*i),
            Op::PurgeTo(i) => self.index.purge(*i),
            Op::Meta(k, v) => drop(self.metas.insert((*k).to_owned(), v.clone())),
        }
    }

    /// Bytes from the first live entry's record to the tail.
    fn live_bytes(&self) -> u64 {
        self.index.offsets.front().map_or(0, |&first| self.tail - first)
    }

    /// After a purge: when the file is more than twice what its live
    /// entries take, rewrites it with only those and the metadata.
    pub(super) fn compact_if_sparse(&mut self) {
        let live = self.live_bytes();
        if self.tail < COMPACT_FILE_BYTES || self.tail < 2 * (live + GROW) {
            return;
        }
        let start = std::time::Instant::now();
        let before = self.len;
        match self.rewrite() {
            Ok(()) => {
                tracing::info!(file = %self.path.display(), before, after = self.len, took_ms = start.elapsed().as_millis() as u64, "compacted the Raft log's file")
            }
            Err(e) => tracing::warn!(file = %self.path.display(), error = %e, "compacting the Raft log's file failed"),
        }
    }

    fn rewrite(&mut self) -> io::Result<()> {
        let seq = self.seq + 1;
        let mut offsets = VecDeque::with_capacity(self.index.offsets.len());
        let tmp = self.path.with_extension("log.new");
        let (metas, index) = (&self.metas, &self.index);
        let len = write_new(&tmp, |out| {
            let mut buf = Vec::new();
            for (k, v) in metas {
                let start = buf.len();
                buf.extend_from_slice(&[0u8; RECORD_HEADER]);
                meta_body(&mut buf, k, v);
                frame_at(&mut buf, start, seq);
            }
            for (k, &offset) in index.offsets.iter().enumerate() {
                let i = index.first + k as u64;
                let mut h = [0u8; RECORD_HEADER];
                self.file.read_exact_at(&mut h, offset)?;
                let rh = RecordHeader::parse(&h);
                let start = buf.len();
                buf.resize(start + RECORD_HEADER + rh.len as usize, 0);
                self.file.read_exact_at(&mut buf[start + RECORD_HEADER..], offset + RECORD_HEADER as u64)?;
                if check(rh.len, rh.seq, &buf[start + RECORD_HEADER..]) != rh.check {
                    return Err(corrupt(&self.path, format!("the record of entry {i} at byte {offset} is damaged")));
                }
                frame_at(&mut buf, start, seq);
                offsets.push_back(HEADER + out.len + start as u64);
                if buf.len() >= BATCH_WRITE_MAX {
                    out.push(&buf)?;
                    buf.clear();
                }
            }
            out.push(&buf)
        })?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = File::options().read(true).write(true).open(&self.path)?;
        self.index.offsets = offsets;
        self.len = len + GROW;
        self.tail = len;
        self.seq = seq;
        Ok(())
    }
}

/// A file being written from the start.
pub(super) struct NewFile {
    file: File,
    /// Bytes written after the header.
    len: u64,
}

impl NewFile {
    pub(super) fn push(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, HEADER + self.len)?;
        self.len += buf.len() as u64;
        Ok(())
    }
}

/// Writes a log file at `path`: the header, then what `fill` pushes, then
/// [`GROW`] bytes of zeros; durable, its directory too, readable by its
/// owner only. Returns where the zeros start.
pub(super) fn write_new(path: &Path, fill: impl FnOnce(&mut NewFile) -> io::Result<()>) -> io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options().read(true).write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all_at(&header(), 0)?;
    let mut out = NewFile { file, len: 0 };
    fill(&mut out)?;
    // Room for what comes next, in zeros (see `GROW`).
    let zeros = vec![0u8; 1 << 20];
    for at in (0..GROW).step_by(zeros.len()) {
        out.file.write_all_at(&zeros, HEADER + out.len + at)?;
    }
    out.file.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(HEADER + out.len)
}

/// Frames `ops` as one batch (for a file written from the start).
pub(super) fn frame_all<'a>(ops: impl IntoIterator<Item = &'a Op>, seq: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    for op in ops {
        frame(&mut buf, seq, op);
    }
    buf
}

mod tail;
#[cfg(test)]
mod tests;
