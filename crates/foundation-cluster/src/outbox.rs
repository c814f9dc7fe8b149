//! The bounded queues of frames towards one peer: two lanes.
//!
//! A frame is encoded by the sender (on its own core), queued, and written
//! by the connection's writer, which gathers small frames into large writes.
//!
//! - **The data lane** carries what processes send each other: messages,
//!   and the link, monitor and exit signals that must keep their order with
//!   those messages (Erlang's per-pair order). It is bounded twice: by
//!   frames ([`PEER_QUEUE_FRAMES`]) and by bytes ([`PEER_QUEUE_BYTES`]). A
//!   peer that stops reading fills it; then `try_send` fails with `Full`
//!   and `send` waits, which is the backpressure a sending process feels.
//! - **The control lane** ([`Out::control`]) carries what the cluster
//!   itself needs: RPC calls and replies (consensus rides on them), peer
//!   lists. The writer always takes a control frame before a data frame,
//!   so consensus and RPCs never wait behind user messages queued here;
//!   heartbeats are made by the writer itself and never queue. It is
//!   bounded by [`CONTROL_QUEUE_FRAMES`] and [`CONTROL_QUEUE_BYTES`].
//!
//! Nothing orders a control frame against a data frame: an RPC may
//! overtake a message sent before it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::frame::HEADER_BYTES_MAX;
use crate::mesh::{PEER_QUEUE_BYTES, PEER_QUEUE_FRAMES};

/// Control frames queued for one peer's writer; past this, senders wait.
pub const CONTROL_QUEUE_FRAMES: usize = 1024;
/// Control bytes queued for one peer's writer; past this, senders wait.
pub const CONTROL_QUEUE_BYTES: usize = 32 << 20;

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
    /// In the control lane (see the module docs).
    control: bool,
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

    /// Puts the frame in the control lane: it goes before every data frame
    /// queued (see the module docs).
    #[must_use]
    pub fn control(mut self) -> Self {
        self.control = true;
        self
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

/// What a frame's buffer starts with: its lengths, a small header and a
/// small message.
const FRAME_START_BYTES: usize = 128;

/// Encodes `[u32 total][u32 header_len][header][inline][tail]` (the tail is
/// kept aside). See `frame.rs` for the layout.
pub(crate) fn encode<H: Serialize, P: Serialize + ?Sized>(
    header: &H,
    inline: Option<&P>,
    tail: Bytes,
    limit: usize,
) -> Result<Out, PushError> {
    let enc = |e: postcard::Error| PushError::Encode(e.to_string());
    // Room for a typical frame at once: grown from 8 bytes, the encoding
    // reallocated four times per message (5 % of `remote.one_way`).
    let mut v = Vec::with_capacity(FRAME_START_BYTES);
    v.extend_from_slice(&[0u8; 8]);
    let mut v = postcard::to_extend(header, v).map_err(enc)?;
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
    // Paired with `frame::next_frame`, which reads these two lengths back.
    debug_assert_eq!(u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize + 4, v.len() + tail.len());
    debug_assert!(header_len <= total - 4);
    Ok(Out { frame: v, tail, permit: None, sent: None, control: false })
}

/// One lane's queue: frames, and a budget of bytes.
#[derive(Clone)]
struct Lane {
    tx: mpsc::Sender<Out>,
    bytes: Arc<Semaphore>,
    bytes_max: usize,
}

impl Lane {
    fn new(frames: usize, bytes_max: usize) -> (Self, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(frames);
        (Self { tx, bytes: Arc::new(Semaphore::new(bytes_max)), bytes_max }, rx)
    }

    fn cost(&self, out: &Out) -> u32 {
        (out.frame.len() + out.tail.len()).min(self.bytes_max) as u32
    }
}

/// Control frames the writer takes in a row while data frames wait; then
/// one data frame goes, so that a flood of RPCs slows messages but never
/// stops them.
pub const CONTROL_BURST_MAX: u32 = 64;

/// What the connection's writer takes frames from: both lanes.
pub(crate) struct Lanes {
    /// Control frames (taken first).
    pub control: mpsc::Receiver<Out>,
    /// Data frames.
    pub data: mpsc::Receiver<Out>,
    /// Control frames taken in a row.
    burst: u32,
}

impl Lanes {
    /// The next frame waiting, control first (up to [`CONTROL_BURST_MAX`]
    /// in a row), without waiting.
    pub fn try_recv(&mut self) -> Option<Out> {
        if self.burst >= CONTROL_BURST_MAX {
            // A burst is over: a waiting data frame goes now; with none
            // waiting, the count starts again.
            self.burst = 0;
            if let Ok(o) = self.data.try_recv() {
                return Some(o);
            }
        }
        debug_assert!(self.burst < CONTROL_BURST_MAX, "data waits for at most a burst of control frames");
        match self.control.try_recv() {
            Ok(o) => {
                self.burst += 1;
                Some(o)
            }
            Err(_) => {
                self.burst = 0;
                self.data.try_recv().ok()
            }
        }
    }
}

/// The sending end of a peer's queues. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    data: Lane,
    control: Lane,
    limit: usize,
    /// The session the connection belongs to: the id of the first of the
    /// connections between the same two incarnations (see `handshake`).
    session: u64,
}

impl Outbox {
    pub fn new(frame_limit: usize, session: u64) -> (Self, Lanes) {
        let (data, data_rx) = Lane::new(PEER_QUEUE_FRAMES, PEER_QUEUE_BYTES);
        let (control, control_rx) = Lane::new(CONTROL_QUEUE_FRAMES, CONTROL_QUEUE_BYTES);
        (Self { data, control, limit: frame_limit, session }, Lanes { control: control_rx, data: data_rx, burst: 0 })
    }

    /// The session of that connection.
    pub fn session(&self) -> u64 {
        self.session
    }

    fn lane(&self, out: &Out) -> &Lane {
        if out.control { &self.control } else { &self.data }
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
        let lane = self.lane(&out);
        if lane.tx.is_closed() {
            return Err((PushError::Closed, out));
        }
        debug_assert!(lane.cost(&out) as usize <= lane.bytes_max, "a frame costs at most the lane's whole budget");
        let Ok(permit) = lane.bytes.clone().try_acquire_many_owned(lane.cost(&out)) else { return Err((PushError::Full, out)) };
        out.permit = Some(permit);
        lane.tx.try_send(out).map_err(|e| match e {
            mpsc::error::TrySendError::Full(mut o) => {
                o.permit = None;
                (PushError::Full, o)
            }
            mpsc::error::TrySendError::Closed(o) => (PushError::Closed, o),
        })
    }

    /// Queues a frame, waiting for room.
    pub async fn send(&self, mut out: Out) -> Result<(), PushError> {
        let lane = self.lane(&out);
        let permit = lane.bytes.clone().acquire_many_owned(lane.cost(&out)).await.map_err(|_| PushError::Closed)?;
        out.permit = Some(permit);
        lane.tx.send(out).await.map_err(|_| PushError::Closed)
    }

    /// Queues a header-only control frame if there is room now.
    pub fn try_push_control<H: Serialize>(&self, header: &H) -> Result<(), PushError> {
        self.try_send(Out::header(header).control())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control frames go first; under a flood of them, one data frame
    /// goes after each burst of [`CONTROL_BURST_MAX`].
    #[test]
    fn control_goes_first_and_data_is_never_starved() {
        let (outbox, mut lanes) = Outbox::new(1 << 20, 0);
        for i in 0..3u32 {
            outbox.try_send(Out::header(&("data", i))).expect("room");
        }
        for i in 0..(2 * CONTROL_BURST_MAX) {
            outbox.try_send(Out::header(&("control", i)).control()).expect("room");
        }
        let mut order = Vec::new();
        while let Some(o) = lanes.try_recv() {
            order.push(o.control);
        }
        assert_eq!(order.len(), 3 + 2 * CONTROL_BURST_MAX as usize);
        let burst = CONTROL_BURST_MAX as usize;
        assert!(order[..burst].iter().all(|c| *c), "a burst of control first");
        assert!(!order[burst], "then one data frame");
        assert!(order[burst + 1..2 * burst + 1].iter().all(|c| *c));
        assert!(!order[2 * burst + 1] && !order[2 * burst + 2], "the rest of the data once control is empty");
    }
}
