//! The bounded queue of frames towards one peer.
//!
//! A frame is encoded by the sender (on its own core), queued, and written
//! by the connection's writer, which gathers small frames into large writes.
//! The queue is bounded twice: by frames ([`PEER_QUEUE_FRAMES`]) and by bytes
//! ([`PEER_QUEUE_BYTES`]). A peer that stops reading fills it; then
//! `try_push` fails with `Full` and `push` waits, which is the backpressure a
//! sending process feels.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::frame::HEADER_BYTES_MAX;
use crate::mesh::{PEER_QUEUE_BYTES, PEER_QUEUE_FRAMES};

/// Why a frame was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue is full (the peer reads slower than we write).
    #[error("the send queue to the peer is full")]
    Full,
    /// The connection is gone.
    #[error("the connection to the peer is closed")]
    Closed,
    /// The frame is over the frame limit.
    #[error("frame of {len} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The frame's size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The message could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// One encoded frame: `frame` holds the length prefix, the header and any
/// inline payload; `tail` is a raw payload written after it without a copy.
pub(crate) struct Out {
    pub frame: Vec<u8>,
    pub tail: Bytes,
    permit: Option<OwnedSemaphorePermit>,
    /// Set once the writer takes the frame (its bytes may then reach the
    /// peer): how a call tells "never sent" from "maybe ran".
    sent: Option<Arc<AtomicBool>>,
}

impl Out {
    /// A frame with only a header (never over the limit).
    pub fn header<H: Serialize>(header: &H) -> Self {
        encode(header, None::<&()>, Bytes::new(), usize::MAX).expect("a bare header encodes")
    }

    /// The bytes after the header (inline and tail): what the receiver
    /// sees as the frame's payload.
    pub fn payload_len(&self) -> usize {
        let header_len = self.frame.get(4..8).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        self.frame.len().saturating_sub(8 + header_len) + self.tail.len()
    }

    /// Sets `flag` when the writer takes this frame.
    pub fn track(&mut self, flag: Arc<AtomicBool>) {
        self.sent = Some(flag);
    }

    /// The writer takes the frame: from now on it may reach the peer.
    pub fn mark_sent(&self) {
        if let Some(f) = &self.sent {
            f.store(true, Ordering::Release);
        }
    }

    /// Gives the frame's bytes back to the queue's budget (once written).
    pub fn release(self) {
        drop(self.permit);
    }
}

/// Encodes `[u32 total][u32 header_len][header][inline][tail]` (the tail is
/// kept aside). See `frame.rs` for the layout.
pub(crate) fn encode<H: Serialize, P: Serialize + ?Sized>(
    header: &H,
    inline: Option<&P>,
    tail: Bytes,
    limit: usize,
) -> Result<Out, PushError> {
    let enc = |e: postcard::Error| PushError::Encode(e.to_string());
    let mut v = postcard::to_extend(header, vec![0u8; 8]).map_err(enc)?;
    let header_len = v.len() - 8;
    if header_len > HEADER_BYTES_MAX {
        return Err(PushError::TooLarge { len: header_len, limit: HEADER_BYTES_MAX });
    }
    if let Some(p) = inline {
        v = postcard::to_extend(p, v).map_err(enc)?;
    }
    let total = v.len() - 4 + tail.len();
    if total > limit || u32::try_from(total).is_err() {
        return Err(PushError::TooLarge { len: total, limit });
    }
    v[..4].copy_from_slice(&(total as u32).to_be_bytes());
    v[4..8].copy_from_slice(&(header_len as u32).to_be_bytes());
    Ok(Out { frame: v, tail, permit: None, sent: None })
}

/// The sending end of a peer's queue. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Out>,
    bytes: Arc<Semaphore>,
    limit: usize,
    /// The session the connection belongs to: the id of the first of the
    /// connections between the same two incarnations (see `handshake`).
    session: u64,
}

impl Outbox {
    pub fn new(frame_limit: usize, session: u64) -> (Self, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES);
        (Self { tx, bytes: Arc::new(Semaphore::new(PEER_QUEUE_BYTES)), limit: frame_limit, session }, rx)
    }

    /// The session of that connection.
    pub fn session(&self) -> u64 {
        self.session
    }

    fn cost(out: &Out) -> u32 {
        (out.frame.len() + out.tail.len()).min(PEER_QUEUE_BYTES) as u32
    }

    /// Encodes a frame for this connection (checks the frame limit).
    pub fn encode<H: Serialize, P: Serialize + ?Sized>(&self, header: &H, inline: Option<&P>, tail: Bytes) -> Result<Out, PushError> {
        encode(header, inline, tail, self.limit)
    }

    /// Queues a frame if there is room now.
    pub fn try_send(&self, out: Out) -> Result<(), PushError> {
        self.try_send_or_keep(out).map_err(|(e, _)| e)
    }

    /// Queues a frame if there is room now; if not, hands it back.
    pub fn try_send_or_keep(&self, mut out: Out) -> Result<(), (PushError, Out)> {
        if self.tx.is_closed() {
            return Err((PushError::Closed, out));
        }
        let Ok(permit) = self.bytes.clone().try_acquire_many_owned(Self::cost(&out)) else { return Err((PushError::Full, out)) };
        out.permit = Some(permit);
        self.tx.try_send(out).map_err(|e| match e {
            mpsc::error::TrySendError::Full(mut o) => {
                o.permit = None;
                (PushError::Full, o)
            }
            mpsc::error::TrySendError::Closed(o) => (PushError::Closed, o),
        })
    }

    /// Queues a frame, waiting for room.
    pub async fn send(&self, mut out: Out) -> Result<(), PushError> {
        let permit = self.bytes.clone().acquire_many_owned(Self::cost(&out)).await.map_err(|_| PushError::Closed)?;
        out.permit = Some(permit);
        self.tx.send(out).await.map_err(|_| PushError::Closed)
    }

    /// Encodes and queues a header-only frame if there is room now.
    pub fn try_push<H: Serialize>(&self, header: &H, tail: Option<Bytes>) -> Result<(), PushError> {
        self.try_send(self.encode(header, None::<&()>, tail.unwrap_or_default())?)
    }
}
