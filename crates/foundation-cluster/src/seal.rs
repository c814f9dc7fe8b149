//! Sealed records: after the handshake, every byte between two nodes
//! travels inside a record whose tag proves who wrote it and where it
//! belongs in the stream.
//!
//! ```text
//! record  = [u32 len][content: len bytes][tag: 16 bytes]
//! tag     = MAC(key of this direction; seq, content)   (crate::mac: POLYVAL, masked per record)
//! content = one or more whole frames (the layout of `frame.rs`)
//! ```
//!
//! - **Keys** come from the handshake ([`SessionKeys`]): one per direction,
//!   derived from the secret, both challenges, both names and both
//!   incarnations, so they belong to this one connection. A record copied
//!   from another connection (a splice), or sent back the way it came (a
//!   reflection), fails its tag.
//! - **`seq`** counts records per direction from 0 and is never sent: a
//!   dropped, replayed or reordered record is checked under the wrong
//!   number and fails.
//! - **A record is verified before any of its frames is delivered**, and a
//!   record that fails ends the connection ([`FrameError::Unauthenticated`]):
//!   nothing after a tampered byte is ever delivered.
//! - **Cost.** One MAC per record, and a record is a write batch (many
//!   frames) or one large frame. The writer hashes a large payload in
//!   [`HASH_CHUNK_BYTES`] pieces just before writing each, and the reader
//!   hashes what each read brings, so the MAC runs beside the copy through
//!   the socket rather than after it. See [`crate::mac`] for why POLYVAL.
//!
//! This is integrity, not secrecy: the bytes are readable on the wire.
//! TLS ([`crate::tls`]) adds encryption underneath.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::FrameError;
use crate::mac::MacKey;
pub use crate::mac::TAG_BYTES;

/// Bytes of a record's length prefix.
pub const PREFIX_BYTES: usize = 4;
/// A large payload is hashed and written in pieces of this size.
pub const HASH_CHUNK_BYTES: usize = 256 << 10;
/// A payload up to this size is copied into the pending record (one
/// write for many frames); a larger one ends the record and is written
/// where it lies. Each write on a no-delay socket is a packet and a wakeup
/// at the peer: small payloads written on their own cost more than the copy.
pub const COPY_TAIL_BYTES_MAX: usize = 64 << 10;

/// The two keys of one connection, one per direction. Its `Debug` does not
/// print them.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub(crate) send: [u8; 32],
    pub(crate) recv: [u8; 32],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl SessionKeys {
    /// The writing half's state.
    pub fn sealer(&self) -> Sealer {
        Sealer { key: MacKey::new(&self.send), seq: 0, buf: vec![0; PREFIX_BYTES] }
    }

    /// The reading half's state; records over `limit` content bytes are
    /// refused before they are read.
    pub fn opener(&self, limit: usize) -> Opener {
        Opener { key: MacKey::new(&self.recv), seq: 0, limit }
    }
}

/// Compares in time independent of where the bytes differ.
fn same(a: &[u8; TAG_BYTES], b: &[u8]) -> bool {
    b.len() == TAG_BYTES && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Builds and writes the records of one direction: frames are pushed into
/// the pending record, then [`Sealer::write`] seals and writes it.
pub struct Sealer {
    key: MacKey,
    seq: u64,
    /// The pending record: the prefix's room, then the content.
    buf: Vec<u8>,
}

impl Sealer {
    /// Adds bytes (whole frames) to the pending record.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Content bytes pending.
    pub fn pending(&self) -> usize {
        self.buf.len() - PREFIX_BYTES
    }

    /// Seals the pending content plus `tail` into one record and writes
    /// it (a large `tail` is hashed and written piece by piece, never
    /// copied). The pending record is empty after, whether or not the
    /// write succeeded.
    pub async fn write<W: AsyncWrite + Unpin>(&mut self, w: &mut W, tail: &[u8]) -> std::io::Result<()> {
        let result = self.write_inner(w, tail).await;
        self.buf.truncate(PREFIX_BYTES);
        if self.buf.capacity() > 4 * HASH_CHUNK_BYTES {
            self.buf.shrink_to(HASH_CHUNK_BYTES);
        }
        result
    }

    async fn write_inner<W: AsyncWrite + Unpin>(&mut self, w: &mut W, tail: &[u8]) -> std::io::Result<()> {
        if tail.len() <= COPY_TAIL_BYTES_MAX {
            self.buf.extend_from_slice(tail);
        }
        let tail = if tail.len() <= COPY_TAIL_BYTES_MAX { &[][..] } else { tail };
        let len = u32::try_from(self.pending() + tail.len())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a record over 4 GiB"))?;
        self.buf[..PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
        let seq = self.seq;
        // A sequence number is never used twice under one key.
        self.seq = self.seq.checked_add(1).expect("fewer than 2^64 records on one connection");
        let mut h = self.key.start();
        h.update(&self.buf[PREFIX_BYTES..]);
        if tail.is_empty() {
            let tag = h.finish(seq);
            self.buf.extend_from_slice(&tag);
            return w.write_all(&self.buf).await;
        }
        // The pending bytes go with the first piece, the tag with the
        // last: one write each (vectored), no copy of the payload.
        let mut pieces = tail.chunks(HASH_CHUNK_BYTES).peekable();
        let mut head: &[u8] = &self.buf;
        while let Some(piece) = pieces.next() {
            h.update(piece);
            if pieces.peek().is_none() {
                let t = h.finish(seq);
                return write_all_vectored(w, [head, piece, &t]).await;
            }
            write_all_vectored(w, [head, piece, &[]]).await?;
            head = &[];
        }
        unreachable!("a tail over COPY_TAIL_BYTES_MAX has a piece")
    }
}

/// Writes all of `parts`, in order, with as few (vectored) writes as the
/// stream takes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, parts: [&[u8]; 3]) -> std::io::Result<()> {
    let mut slices = parts.map(std::io::IoSlice::new);
    let mut rest = &mut slices[..];
    std::io::IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Reads and verifies the records of one direction.
pub struct Opener {
    key: MacKey,
    seq: u64,
    limit: usize,
}

impl Opener {
    /// Reads one record and returns its verified content (one buffer; the
    /// frames in it are slices of it). A clean close before a record is
    /// [`FrameError::Closed`]; a record that fails its tag is
    /// [`FrameError::Unauthenticated`], and nothing of it is returned.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Bytes, FrameError> {
        let mut prefix = [0u8; PREFIX_BYTES];
        match r.read(&mut prefix[..1]).await? {
            0 => return Err(FrameError::Closed),
            _ => r.read_exact(&mut prefix[1..]).await?,
        };
        let len = u32::from_be_bytes(prefix);
        let content = len as usize;
        if content > self.limit {
            return Err(FrameError::TooLarge { len: content, limit: self.limit });
        }
        let total = content + TAG_BYTES;
        let seq = self.seq;
        self.seq += 1;
        let mut h = self.key.start();
        // Filled straight into spare capacity and hashed as it arrives.
        let mut buf = BytesMut::with_capacity(total);
        let mut hashed = 0;
        while buf.len() < total {
            let want = total - buf.len();
            let mut rest = (&mut buf).limit(want);
            if r.read_buf(&mut rest).await? == 0 {
                return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let upto = buf.len().min(content);
            h.update(&buf[hashed..upto]);
            hashed = upto;
        }
        // Paired with `Sealer::write`: what was hashed is what the prefix announced.
        debug_assert_eq!((hashed, buf.len()), (content, total));
        if !same(&h.finish(seq), &buf[content..]) {
            return Err(FrameError::Unauthenticated);
        }
        buf.truncate(content);
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (SessionKeys, SessionKeys) {
        let a = SessionKeys { send: [1; 32], recv: [2; 32] };
        let b = SessionKeys { send: [2; 32], recv: [1; 32] };
        (a, b)
    }

    async fn sealed(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let (a, _) = keys();
        let mut sealer = a.sealer();
        let mut out = Vec::new();
        for (head, tail) in records {
            sealer.push(head);
            sealer.write(&mut out, tail).await.expect("written");
        }
        out
    }

    async fn open_all(bytes: Vec<u8>) -> (Vec<Bytes>, FrameError) {
        let (_, b) = keys();
        let mut opener = b.opener(1 << 24);
        let mut r = &bytes[..];
        let mut got = Vec::new();
        loop {
            match opener.read(&mut r).await {
                Ok(c) => got.push(c),
                Err(e) => return (got, e),
            }
        }
    }

    #[tokio::test]
    async fn records_round_trip_with_and_without_a_tail() {
        let big = vec![5u8; 3 * HASH_CHUNK_BYTES + 17];
        let small = vec![6u8; COPY_TAIL_BYTES_MAX];
        let bytes = sealed(&[(b"one", b""), (b"two", &big), (b"", b""), (b"three", &small)]).await;
        let (got, end) = open_all(bytes).await;
        assert!(matches!(end, FrameError::Closed), "{end}");
        assert_eq!(got.len(), 4);
        assert_eq!(&got[0][..], b"one");
        assert_eq!(got[1].len(), 3 + big.len());
        assert!(got[1][3..].iter().all(|b| *b == 5));
        assert!(got[2].is_empty());
        assert_eq!(got[3].len(), 5 + small.len());
    }

    #[tokio::test]
    async fn a_flipped_bit_anywhere_fails_its_record() {
        let bytes = sealed(&[(b"first", b""), (b"second record", b"")]).await;
        let first_len = PREFIX_BYTES + 5 + TAG_BYTES;
        for i in first_len..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let (got, end) = open_all(bad).await;
            assert_eq!(got.len(), 1, "byte {i}: only the record before the flip is delivered");
            assert!(matches!(end, FrameError::Unauthenticated | FrameError::TooLarge { .. } | FrameError::Io(_)), "byte {i}: {end}");
        }
    }

    #[tokio::test]
    async fn dropped_replayed_and_reordered_records_fail() {
        let bytes = sealed(&[(b"r0", b""), (b"r1", b""), (b"r2", b"")]).await;
        let n = PREFIX_BYTES + 2 + TAG_BYTES;
        let rec = |i: usize| bytes[i * n..(i + 1) * n].to_vec();
        for (what, stream) in [
            ("dropped", [rec(0), rec(2)].concat()),
            ("replayed", [rec(0), rec(0)].concat()),
            ("reordered", [rec(0), rec(2), rec(1)].concat()),
        ] {
            let (got, end) = open_all(stream).await;
            assert_eq!(got.len(), 1, "{what}");
            assert!(matches!(end, FrameError::Unauthenticated), "{what}: {end}");
        }
    }

    #[tokio::test]
    async fn a_record_of_another_key_or_reflected_fails() {
        let bytes = sealed(&[(b"hello", b"")]).await;
        // Read back by its own writer's keys (a reflection).
        let (a, _) = keys();
        let err = a.opener(1 << 20).read(&mut &bytes[..]).await.expect_err("reflected");
        assert!(matches!(err, FrameError::Unauthenticated), "{err}");
    }

    #[tokio::test]
    async fn an_oversized_record_is_refused_before_it_is_read() {
        let (_, b) = keys();
        let bytes = (1u32 << 30).to_be_bytes();
        let err = b.opener(1 << 20).read(&mut &bytes[..]).await.expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { len, limit } if len == 1 << 30 && limit == 1 << 20), "{err}");
    }
}
