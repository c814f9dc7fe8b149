//! Sending strategies and flow control (the seed's `Foundation.BEAM.Messages`).
//!
//! # Strategy by size
//!
//! A local send never serializes and never copies a payload: the message
//! value moves into the receiver's mailbox. What that costs depends only on
//! the message's inline size, not on the data it owns:
//!
//! | message | what a local send copies |
//! |---|---|
//! | small values (`u64`, a small enum; up to [`SMALL_MESSAGE_BYTES`]) | the value itself, once |
//! | owned buffers (`Vec<u8>`, `String`, `Box<T>`) | the handle (pointer, length, capacity); the buffer stays put |
//! | shared buffers (`bytes::Bytes`, `Arc<[u8]>`) | the handle; clones for more receivers share one buffer (the BEAM's refc binaries) |
//!
//! So a 1 MiB `Bytes` message costs what a small one costs (see the
//! `message.large_1mib` and `message.small` benches). Bytes still count
//! against the receiver's byte limits at their full size
//! ([`Message::total_bytes`]), so a flood of large messages is refused
//! before it can exhaust memory.
//!
//! [`send_optimized`] applies the strategy: a small message tries the
//! non-waiting path first; a large one goes straight to the waiting send.
//! [`broadcast`] sends one shared payload to many processes.
//!
//! # Flow control
//!
//! [`send_with_flow_control`] never waits: a receiver over its bounds
//! answers [`FlowError::Backpressure`], and the caller decides (retry later,
//! shed load, slow down). `Addr::send` waits for room instead, and
//! `Addr::try_send` reports the same condition as `SendError::Full`.

use crate::{Addr, Message, SendError};

/// Messages up to this many bytes take the small-message path.
pub const SMALL_MESSAGE_BYTES: usize = 256;

/// Sends by the strategy above; waits for room like [`Addr::send`].
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use foundation::{Ctx, Node, messages::send_optimized};
/// let node = Node::new("doc");
/// let (tx, rx) = tokio::sync::oneshot::channel();
/// let sink = node.spawn(move |mut ctx: Ctx<bytes::Bytes>| async move {
///     let _ = tx.send(ctx.recv().await.len());
/// });
/// send_optimized(&sink, bytes::Bytes::from(vec![7u8; 1_000_000])).await.unwrap();
/// assert_eq!(rx.await.unwrap(), 1_000_000);
/// # });
/// ```
pub async fn send_optimized<M: Message>(to: &Addr<M>, msg: M) -> Result<(), SendError<M>> {
    if msg.total_bytes() > SMALL_MESSAGE_BYTES {
        return to.send(msg).await;
    }
    match to.try_send(msg) {
        Err(SendError::Full(msg)) => to.send(msg).await,
        done => done,
    }
}

/// Sends a clone of `msg` to each process without waiting. With a `Bytes`
/// (or `Arc`) payload every receiver shares one buffer. Returns one result
/// per address, in order.
pub fn broadcast<M: Message + Clone>(to: &[Addr<M>], msg: &M) -> Vec<Result<(), SendError<M>>> {
    to.iter().map(|addr| addr.try_send(msg.clone())).collect()
}

/// Why [`send_with_flow_control`] did not deliver.
#[derive(thiserror::Error)]
pub enum FlowError<M> {
    /// The receiver's mailbox is over its message or byte bound (or its
    /// shared budget is spent): nothing was queued; the message comes back.
    #[error("backpressure: the receiver's mailbox is full")]
    Backpressure(M),
    /// Refused for another reason (no such process, too large, dropped by
    /// the mailbox's policy).
    #[error(transparent)]
    Refused(SendError<M>),
}

impl<M> FlowError<M> {
    /// True for [`FlowError::Backpressure`].
    pub fn is_backpressure(&self) -> bool {
        matches!(self, Self::Backpressure(_))
    }
}

impl<M> std::fmt::Debug for FlowError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlowError({self})")
    }
}

/// Sends without waiting; a full mailbox answers [`FlowError::Backpressure`].
pub fn send_with_flow_control<M: Message>(to: &Addr<M>, msg: M) -> Result<(), FlowError<M>> {
    to.try_send(msg).map_err(|e| match e {
        SendError::Full(m) => FlowError::Backpressure(m),
        other => FlowError::Refused(other),
    })
}
