//! Frames on the wire between nodes.
//!
//! ```text
//! [u32 total][u32 header_len][header: postcard, header_len bytes][payload: raw bytes]
//! ```
//!
//! Lengths are big-endian; `total` counts everything after itself. The
//! header is small and typed (postcard); the payload is opaque bytes that
//! never pass through serde, and on receipt it is a slice of the frame's
//! one buffer (no copy).
//!
//! (A hand-written codec rather than `tokio-util`'s: the framing is a few
//! lines, the payload split needs the two-length layout anyway, and it keeps
//! `futures` out of the dependency tree. The outer length is the same as
//! `LengthDelimitedCodec`'s default.)

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Default frame limit: a 16 MiB payload plus room for its header.
pub const FRAME_BYTES_DEFAULT: usize = (16 << 20) + (64 << 10);
/// Largest header accepted, whatever the frame limit.
pub const HEADER_BYTES_MAX: usize = 64 << 10;

/// A frame: a typed header (still encoded) and a raw payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The postcard-encoded header.
    pub header: Bytes,
    /// The raw payload.
    pub payload: Bytes,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame announces more bytes than the limit allows.
    #[error("frame of {len} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Announced (or attempted) size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a frame (or the header does not decode).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A sealed record failed its tag: tampered with, dropped, replayed,
    /// reordered, or from another connection (see `seal.rs`).
    #[error("a record failed authentication (tampered, dropped, replayed, reordered or spliced)")]
    Unauthenticated,
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes a header.
pub fn encode_header<T: Serialize>(header: &T) -> Vec<u8> {
    postcard::to_stdvec(header).expect("postcard encodes any serde value into a Vec")
}

/// Decodes a header; a bad one is [`FrameError::Malformed`].
pub fn decode_header<T: DeserializeOwned>(header: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(header).map_err(|e| FrameError::Malformed(format!("header does not decode: {e}")))
}

/// Reads one frame of at most `limit` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> Result<Frame, FrameError> {
    let mut len = [0u8; 4];
    // A clean close between frames is `Closed`; inside one it is an error.
    match r.read(&mut len[..1]).await? {
        0 => return Err(FrameError::Closed),
        _ => r.read_exact(&mut len[1..]).await?,
    };
    let total = u32::from_be_bytes(len) as usize;
    if total > limit {
        return Err(FrameError::TooLarge { len: total, limit });
    }
    if total < 4 {
        return Err(FrameError::Malformed(format!("a frame of {total} bytes cannot hold its header length")));
    }
    // Filled straight into spare capacity: a large payload is neither zeroed
    // first nor copied again after.
    let mut buf = BytesMut::with_capacity(total);
    while buf.len() < total {
        let want = total - buf.len();
        let mut rest = (&mut buf).limit(want);
        if r.read_buf(&mut rest).await? == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    let header_len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if header_len > total - 4 || header_len > HEADER_BYTES_MAX {
        return Err(FrameError::Malformed(format!("header of {header_len} bytes in a frame of {total}")));
    }
    let mut body = buf.split_off(4).freeze();
    let payload = body.split_off(header_len);
    Ok(Frame { header: body, payload })
}

/// Takes the next frame off the front of `content` (a verified record's
/// content: whole frames back to back), or `None` when it is empty. The
/// frame's header and payload are slices of `content`'s buffer.
pub fn next_frame(content: &mut Bytes, limit: usize) -> Result<Option<Frame>, FrameError> {
    if content.is_empty() {
        return Ok(None);
    }
    if content.len() < 8 {
        return Err(FrameError::Malformed(format!("{} bytes cannot hold a frame's lengths", content.len())));
    }
    let total = u32::from_be_bytes([content[0], content[1], content[2], content[3]]) as usize;
    if total > limit {
        return Err(FrameError::TooLarge { len: total, limit });
    }
    if total < 4 || total > content.len() - 4 {
        return Err(FrameError::Malformed(format!("a frame of {total} bytes in {} bytes", content.len() - 4)));
    }
    let header_len = u32::from_be_bytes([content[4], content[5], content[6], content[7]]) as usize;
    if header_len > total - 4 || header_len > HEADER_BYTES_MAX {
        return Err(FrameError::Malformed(format!("header of {header_len} bytes in a frame of {total}")));
    }
    let mut frame = content.split_to(4 + total);
    let mut header = frame.split_off(8);
    let payload = header.split_off(header_len);
    Ok(Some(Frame { header, payload }))
}

/// Writes one frame; refuses it if it would pass `limit`.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, header: &[u8], payload: &[u8], limit: usize) -> Result<(), FrameError> {
    let total = 4 + header.len() + payload.len();
    if total > limit || header.len() > HEADER_BYTES_MAX {
        return Err(FrameError::TooLarge { len: total, limit });
    }
    let total = u32::try_from(total).map_err(|_| FrameError::TooLarge { len: total, limit: u32::MAX as usize })?;
    let header_len = u32::try_from(header.len()).expect("header bounded by HEADER_BYTES_MAX");
    let mut prefix = [0u8; 8];
    prefix[..4].copy_from_slice(&total.to_be_bytes());
    prefix[4..].copy_from_slice(&header_len.to_be_bytes());
    w.write_all(&prefix).await?;
    w.write_all(header).await?;
    w.write_all(payload).await?;
    w.flush().await?;
    Ok(())
}

/// Writes a frame with only a typed header.
pub async fn write_header<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, header: &T, limit: usize) -> Result<(), FrameError> {
    write_frame(w, &encode_header(header), &[], limit).await
}

/// Reads a frame and decodes its header (the payload must be empty).
pub async fn read_header<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R, limit: usize) -> Result<T, FrameError> {
    let frame = read_frame(r, limit).await?;
    if !frame.payload.is_empty() {
        return Err(FrameError::Malformed("unexpected payload".into()));
    }
    decode_header(&frame.header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_the_payload_is_a_slice_of_one_buffer() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let payload = vec![9u8; 100_000];
        write_frame(&mut a, b"head", &payload, FRAME_BYTES_DEFAULT).await.expect("write");
        write_frame(&mut a, b"", b"", FRAME_BYTES_DEFAULT).await.expect("empty frame");
        drop(a);
        let f = read_frame(&mut b, FRAME_BYTES_DEFAULT).await.expect("read");
        assert_eq!(&f.header[..], b"head");
        assert_eq!(f.payload.len(), 100_000);
        // Header and payload share one allocation: the payload was not copied out.
        assert_eq!(f.payload.as_ptr() as usize, f.header.as_ptr() as usize + 4);
        let empty = read_frame(&mut b, FRAME_BYTES_DEFAULT).await.expect("read");
        assert!(empty.header.is_empty() && empty.payload.is_empty());
        assert!(matches!(read_frame(&mut b, FRAME_BYTES_DEFAULT).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_on_both_sides() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let err = write_frame(&mut a, b"", &[0u8; 2000], 1000).await.expect_err("too large to send");
        assert!(matches!(err, FrameError::TooLarge { len: 2004, limit: 1000 }), "{err}");
        a.write_all(&5000u32.to_be_bytes()).await.expect("raw write");
        let err = read_frame(&mut b, 1000).await.expect_err("too large to receive");
        assert!(matches!(err, FrameError::TooLarge { len: 5000, limit: 1000 }), "{err}");
    }

    #[test]
    fn frames_split_out_of_a_record_as_slices_and_bad_ones_are_errors() {
        let mut record = Vec::new();
        for (h, p) in [(&b"ab"[..], &b"payload"[..]), (b"", b""), (b"x", b"")] {
            record.extend_from_slice(&((4 + h.len() + p.len()) as u32).to_be_bytes());
            record.extend_from_slice(&(h.len() as u32).to_be_bytes());
            record.extend_from_slice(h);
            record.extend_from_slice(p);
        }
        let mut content = Bytes::from(record.clone());
        let base = content.as_ptr() as usize;
        let first = next_frame(&mut content, 1000).expect("ok").expect("a frame");
        assert_eq!((&first.header[..], &first.payload[..]), (&b"ab"[..], &b"payload"[..]));
        assert_eq!(first.header.as_ptr() as usize, base + 8, "a slice, not a copy");
        assert!(next_frame(&mut content, 1000).expect("ok").is_some());
        assert_eq!(&next_frame(&mut content, 1000).expect("ok").expect("a frame").header[..], b"x");
        assert!(next_frame(&mut content, 1000).expect("ok").is_none());
        for cut in 1..record.len() {
            let mut short = Bytes::from(record[..cut].to_vec());
            let mut n = 0;
            let end = loop {
                match next_frame(&mut short, 1000) {
                    Ok(Some(_)) => n += 1,
                    other => break other,
                }
            };
            assert!(n <= 3, "cut {cut}");
            assert!(end.is_err() || short.is_empty(), "cut {cut}: {end:?}");
        }
        let mut over = Bytes::from(record);
        assert!(matches!(next_frame(&mut over, 5), Err(FrameError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn garbage_is_malformed_not_a_panic() {
        for garbage in [&[0u8, 0, 0, 2, 1, 2][..], &[0, 0, 0, 8, 0, 0, 0, 99, 1, 2, 3, 4][..], &[0, 0][..]] {
            let (mut a, mut b) = tokio::io::duplex(64);
            a.write_all(garbage).await.expect("raw write");
            drop(a);
            let err = read_frame(&mut b, 1000).await.expect_err("garbage");
            assert!(matches!(err, FrameError::Malformed(_) | FrameError::Io(_)), "{garbage:?}: {err}");
        }
        let err = decode_header::<(u32, String)>(&[0xff, 0xff, 0xff]).expect_err("bad postcard");
        assert!(matches!(err, FrameError::Malformed(_)));
    }
}
