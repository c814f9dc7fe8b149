//! Mailboxes: bounded by default, accounted in messages and in bytes.
//!
//! # Semantics
//!
//! A mailbox holds the messages a process was sent and has not yet received.
//! It is bounded by [`MailboxConfig::capacity`] messages and
//! [`MailboxConfig::max_bytes`] bytes (as told by [`Message::total_bytes`]);
//! a single message over [`MailboxConfig::max_message_bytes`] is refused
//! outright with [`SendError::TooLarge`]. When a message would pass a bound,
//! the [`Overflow`] policy decides:
//!
//! - [`Overflow::Backpressure`] (default): `try_send` fails with
//!   [`SendError::Full`] and hands the message back; `send().await` waits
//!   for room.
//! - [`Overflow::DropNewest`]: the new message is refused with
//!   [`SendError::Dropped`] and counted in the process's `dropped`.
//! - [`Overflow::DropOldest`]: the oldest messages not yet taken by the
//!   receiver are discarded (counted) to make room and the send succeeds;
//!   only if nothing is left to discard (a shared budget spent by other
//!   mailboxes) is the new message dropped too.
//!
//! Nothing accepted is ever lost while the receiver lives: accepted messages
//! are delivered exactly once, in the order they were accepted from any one
//! sender. When the process exits, what is left in its mailbox is dropped and
//! senders waiting for room get [`SendError::NoProc`].
//!
//! # How it is fast
//!
//! The receiver takes the whole queue in one locked swap and then pops from
//! its private batch without locking; senders only lock an uncontended mutex.
//! Room is released as the receiver consumes (a counter the sender reads only
//! when the mailbox looks full), so the bound is exact, not per batch. A
//! sender that finds the mailbox full registers under the lock, raises
//! `senders_waiting`, fences, and looks once more, so it sees every message
//! taken before its fence. The receiver publishes each message it takes and
//! then reads the flag (no fence: a fence per message costs a third of the
//! throughput); when its batch is used up, its next look at the mailbox
//! takes the lock and wakes every registered sender. A waiting sender is
//! therefore woken at the receiver's next message or next mailbox look. One
//! case stays open: if the sender's look races, within nanoseconds, with the
//! receiver's last read, and the receiver then stops reading (blocks on
//! something else), the sender waits until the receiver reads again.
//! Under `DropOldest` the receiver takes one message at a time, so the oldest
//! unreceived message is always droppable.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::Waker;

use crate::Message;

/// Default bound on messages in one mailbox.
pub const MAILBOX_CAPACITY_DEFAULT: usize = 1024;
/// Largest message bound a mailbox can have (batch counters are 32-bit).
pub const MAILBOX_CAPACITY_MAX: usize = u32::MAX as usize;
/// Default bound on bytes in one mailbox (64 MiB).
pub const MAILBOX_BYTES_DEFAULT: usize = 64 << 20;
/// Largest byte bound a mailbox can have, just under 4 GiB (its byte counters
/// are 32-bit, which keeps an idle process within its allocator class).
pub const MAILBOX_BYTES_MAX: usize = u32::MAX as usize;
/// Default bound on one message (16 MiB).
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 16 << 20;

/// What happens when a message would pass a mailbox bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse (`try_send`) or wait for room (`send`).
    #[default]
    Backpressure,
    /// Refuse the new message and count it as dropped.
    DropNewest,
    /// Drop the oldest unreceived message to make room.
    DropOldest,
}

/// Bounds and policy of one mailbox.
#[derive(Clone, Debug)]
pub struct MailboxConfig {
    /// Maximum messages waiting (at least 1).
    pub capacity: usize,
    /// Maximum bytes waiting.
    pub max_bytes: usize,
    /// Maximum bytes of one message.
    pub max_message_bytes: usize,
    /// What to do when full.
    pub overflow: Overflow,
    /// When the receiver finds its mailbox empty, buffers grown past this
    /// many slots are shrunk back to it (releasing memory after a burst).
    /// `None` keeps grown buffers for reuse.
    pub shrink_to: Option<usize>,
    /// A byte budget shared with other mailboxes (see [`ByteBudget`]);
    /// `max_bytes` still bounds this mailbox alone.
    pub shared_budget: Option<ByteBudget>,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        Self {
            capacity: MAILBOX_CAPACITY_DEFAULT,
            max_bytes: MAILBOX_BYTES_DEFAULT,
            max_message_bytes: MESSAGE_BYTES_MAX_DEFAULT,
            overflow: Overflow::Backpressure,
            shrink_to: None,
            shared_budget: None,
        }
    }
}

impl MailboxConfig {
    /// A mailbox bounded at `capacity` messages, other settings default.
    pub fn bounded(capacity: usize) -> Self {
        Self { capacity, ..Self::default() }
    }

    /// The largest bounds: [`MAILBOX_CAPACITY_MAX`] messages and
    /// [`MAILBOX_BYTES_MAX`] bytes, with the default per-message limit. Use
    /// only where the sender is known to be slower than the receiver.
    pub fn unbounded() -> Self {
        Self { capacity: MAILBOX_CAPACITY_MAX, max_bytes: MAILBOX_BYTES_MAX, ..Self::default() }
    }

    /// The same config with another overflow policy.
    pub fn with_overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Checks the bounds; the error names the bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.capacity == 0 || self.capacity > MAILBOX_CAPACITY_MAX {
            return Err(ConfigError::new("mailbox.capacity", format!("must be 1..={MAILBOX_CAPACITY_MAX}")));
        }
        if self.max_message_bytes == 0 {
            return Err(ConfigError::new("mailbox.max_message_bytes", "must be at least 1"));
        }
        if self.max_bytes > MAILBOX_BYTES_MAX {
            return Err(ConfigError::new("mailbox.max_bytes", format!("{} is over the limit of {MAILBOX_BYTES_MAX}", self.max_bytes)));
        }
        if self.max_bytes < self.max_message_bytes {
            return Err(ConfigError::new(
                "mailbox.max_bytes",
                format!(
                    "{} is below max_message_bytes {}; no message that size could ever be queued",
                    self.max_bytes, self.max_message_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// An invalid configuration value: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid config `{field}`: {reason}")]
pub struct ConfigError {
    /// The path of the bad field, e.g. `workers.count`.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// A byte budget shared by several mailboxes (an ecosystem's "shared heap").
///
/// A sender refused by the budget (under backpressure) waits on the budget,
/// not on the mailbox: room comes back when *any* mailbox sharing it
/// releases bytes.
#[derive(Clone)]
pub struct ByteBudget(Arc<BudgetInner>);

struct BudgetInner {
    limit: usize,
    used: AtomicUsize,
    has_waiters: AtomicBool,
    waiters: parking_lot::Mutex<Vec<Waker>>,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(BudgetInner {
            limit,
            used: AtomicUsize::new(0),
            has_waiters: AtomicBool::new(false),
            waiters: parking_lot::Mutex::new(Vec::new()),
        }))
    }

    /// Bytes reserved by queued messages right now.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// The budget's limit.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    pub(crate) fn try_reserve(&self, bytes: usize) -> bool {
        self.0.used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| u.checked_add(bytes).filter(|n| *n <= self.0.limit)).is_ok()
    }

    pub(crate) fn release(&self, bytes: usize) {
        // SeqCst on both sides (here and in `wait`) so that a waiter either
        // sees these bytes free when it retries or is woken here.
        let prev = self.0.used.fetch_sub(bytes, Ordering::SeqCst);
        debug_assert!(prev >= bytes, "byte budget released more than it reserved");
        if self.0.has_waiters.load(Ordering::SeqCst) {
            let waiters = {
                let mut w = self.0.waiters.lock();
                self.0.has_waiters.store(false, Ordering::SeqCst);
                std::mem::take(&mut *w)
            };
            waiters.into_iter().for_each(Waker::wake);
        }
    }

    /// Registers a sender to be woken at the next release. The caller
    /// retries its reservation afterwards, closing the race with `release`.
    pub(crate) fn wait(&self, waker: &Waker) {
        let mut w = self.0.waiters.lock();
        if !w.iter().any(|x| x.will_wake(waker)) {
            w.push(waker.clone());
        }
        self.0.has_waiters.store(true, Ordering::SeqCst);
    }
}

impl fmt::Debug for ByteBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteBudget({}/{})", self.used(), self.limit())
    }
}

/// Why a message was not delivered. The message comes back where it can.
#[derive(thiserror::Error)]
pub enum SendError<M> {
    /// The process does not exist (or exited before taking the message).
    #[error("no such process")]
    NoProc(Option<M>),
    /// The mailbox is full and its policy is backpressure.
    #[error("mailbox full (backpressure)")]
    Full(M),
    /// The mailbox is full and its policy dropped this message.
    #[error("mailbox full: message dropped by drop-newest policy")]
    Dropped(M),
    /// The message is over the mailbox's per-message byte limit.
    #[error("message of {bytes} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The message.
        msg: M,
        /// Its accounted size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The pid belongs to a process that receives another message type.
    #[error("process receives `{expected}`, not this message type")]
    WrongType {
        /// The message.
        msg: M,
        /// The type the process receives.
        expected: &'static str,
    },
}

impl<M> SendError<M> {
    /// The undelivered message, if the error kept it.
    pub fn into_inner(self) -> Option<M> {
        match self {
            Self::NoProc(m) => m,
            Self::Full(m) | Self::Dropped(m) | Self::TooLarge { msg: m, .. } | Self::WrongType { msg: m, .. } => Some(m),
        }
    }

    /// True for [`SendError::Full`]: the receiver is there but applying backpressure.
    pub fn is_backpressure(&self) -> bool {
        matches!(self, Self::Full(_))
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SendError({self})")
    }
}

/// A queued message and the context it was sent in (see [`crate::context`]).
pub(crate) struct Envelope<M> {
    pub msg: M,
    pub context: Option<crate::context::Context>,
}

impl<M> Envelope<M> {
    /// `msg` in the sender's current context.
    #[inline]
    pub fn new(msg: M) -> Self {
        let context = if crate::context::is_set() { crate::context::current() } else { None };
        Self { msg, context }
    }
}

impl<M: Message> Message for Envelope<M> {
    fn heap_bytes(&self) -> usize {
        self.msg.heap_bytes()
    }
    /// Accounted as the message alone: the envelope is bookkeeping.
    fn total_bytes(&self) -> usize {
        self.msg.total_bytes()
    }
}

/// The part of a mailbox guarded by the process lock.
pub(crate) struct Queue<M> {
    /// Messages not yet taken by the receiver.
    pub items: VecDeque<M>,
    /// Bytes of `items` (at most `max_bytes`, so at most `MAILBOX_BYTES_MAX`).
    pub bytes: u32,
    /// Size of the batch the receiver took at its last swap (a batch is at
    /// most `capacity`, which is at most `u32::MAX`).
    pub taken: u32,
    /// Bytes of that batch.
    pub taken_bytes: u32,
    /// The receiver, when it waits for a message.
    pub rx_waker: Option<Waker>,
    /// How much of the batch a sender last saw consumed (`<= taken`): lets
    /// senders count room without reading the receiver's counter on every
    /// send when the mailbox is nearly full. Reset with `taken`.
    pub seen: u32,
}

/// Written by the receiver without the lock: how much of its batch it has
/// consumed. Senders read it only when the mailbox looks full.
#[derive(Default)]
pub(crate) struct Progress {
    /// Times the process's task was polled (counted by the task after each
    /// poll, on the line the receive just wrote).
    pub polls: AtomicU64,
    pub consumed: AtomicU32,
    pub consumed_bytes: AtomicU32,
    pub senders_waiting: AtomicBool,
    /// Set when the process's signal queue is non-empty, so the receiver
    /// can skip the lock (kept here, in padding, to keep processes small).
    pub has_signals: AtomicBool,
    /// On a migrating pool (`process::Roaming`, which alone writes these):
    /// polls since the process last moved, counted up to `SETTLE_POLLS`
    /// (then it may move again); and the scheduler it
    /// moved to, until it first runs there, as `index + 1` (0: none). Kept
    /// here, in padding, so that a roaming task holds its runner alone.
    pub settled: AtomicU8,
    pub arriving: AtomicU16,
}

/// What a sender's offer came to. Messages evicted by `DropOldest` come
/// back so the caller drops them after releasing the process lock (a
/// message's `Drop` may send to this very process).
pub(crate) enum Offer<M> {
    /// Queued; wake this receiver if any.
    Accepted(Option<Waker>),
    /// Queued after evicting older messages (drop-oldest; each counts as dropped).
    AcceptedEvicting(Option<Waker>, Vec<M>),
    /// Over this mailbox's bounds (backpressure).
    Full(M),
    /// Within this mailbox's bounds, but the shared budget is spent (backpressure).
    NoBudget(M),
    /// Refused by a drop policy (it and the evicted count as dropped).
    Dropped(M, Vec<M>),
    TooLarge(M, usize),
}

impl<M> Offer<M> {
    /// Messages this offer dropped (the refused one and any evicted).
    pub fn dropped(&self) -> u64 {
        match self {
            Self::AcceptedEvicting(_, evicted) => evicted.len() as u64,
            Self::Dropped(_, evicted) => 1 + evicted.len() as u64,
            _ => 0,
        }
    }
}

impl<M: Message> Queue<M> {
    pub fn new() -> Self {
        Self { items: VecDeque::new(), bytes: 0, taken: 0, taken_bytes: 0, rx_waker: None, seen: 0 }
    }

    /// Messages accepted and not yet received (exact).
    pub fn len(&self, progress: &Progress) -> usize {
        self.items.len() + (self.taken - progress.consumed.load(Ordering::Acquire).min(self.taken)) as usize
    }

    /// Bytes accepted and not yet received (exact).
    pub fn outstanding_bytes(&self, progress: &Progress) -> usize {
        // Summed in `usize`: the batch and the queue can each be near the 32-bit limit.
        self.bytes as usize + (self.taken_bytes - progress.consumed_bytes.load(Ordering::Acquire).min(self.taken_bytes)) as usize
    }

    /// Room for `bytes` more. Counts with what senders last saw consumed and
    /// reads the receiver's counters only when that says full (a cache line
    /// the receiver writes on every message).
    #[inline(always)]
    fn has_room(&mut self, cfg: &MailboxConfig, progress: &Progress, bytes: usize) -> bool {
        let quick = self.items.len() + ((self.taken - self.seen) as usize) < cfg.capacity
            && self.bytes as usize + self.taken_bytes as usize + bytes <= cfg.max_bytes;
        if quick {
            return true;
        }
        self.seen = progress.consumed.load(Ordering::Acquire).min(self.taken);
        self.len(progress) < cfg.capacity && self.outstanding_bytes(progress).saturating_add(bytes) <= cfg.max_bytes
    }

    /// Tries to queue `msg` under `cfg`'s bounds, shared budget and policy.
    #[inline(always)]
    pub fn offer(&mut self, cfg: &MailboxConfig, progress: &Progress, msg: M) -> Offer<M> {
        let bytes = msg.total_bytes();
        if bytes > cfg.max_message_bytes {
            return Offer::TooLarge(msg, bytes);
        }
        // The common cases first: room and no shared budget.
        if cfg.shared_budget.is_none() {
            if self.has_room(cfg, progress, bytes) {
                self.items.push_back(msg);
                // Within `max_bytes`, which fits 32 bits (`MAILBOX_BYTES_MAX`).
                self.bytes += bytes as u32;
                return Offer::Accepted(self.rx_waker.take());
            }
            if cfg.overflow == Overflow::Backpressure {
                return Offer::Full(msg);
            }
        }
        self.offer_slow(cfg, progress, msg, bytes)
    }

    /// Drop policies and the shared budget.
    #[inline(never)]
    fn offer_slow(&mut self, cfg: &MailboxConfig, progress: &Progress, msg: M, bytes: usize) -> Offer<M> {
        let mut evicted = Vec::new();
        loop {
            let room = self.has_room(cfg, progress, bytes);
            if room && cfg.shared_budget.as_ref().is_none_or(|b| b.try_reserve(bytes)) {
                break;
            }
            match cfg.overflow {
                Overflow::Backpressure if room => return Offer::NoBudget(msg),
                Overflow::Backpressure => return Offer::Full(msg),
                Overflow::DropNewest => {
                    return Offer::Dropped(msg, evicted);
                }
                Overflow::DropOldest => match self.items.pop_front() {
                    Some(old) => {
                        let old_bytes = old.total_bytes();
                        self.bytes -= old_bytes as u32;
                        if let Some(budget) = &cfg.shared_budget {
                            budget.release(old_bytes);
                        }
                        evicted.push(old);
                    }
                    // Nothing left to evict (the receiver holds the rest, or
                    // other mailboxes hold the shared budget): drop the new one.
                    None => {
                        return Offer::Dropped(msg, evicted);
                    }
                },
            }
        }
        self.items.push_back(msg);
        self.bytes += bytes as u32;
        if evicted.is_empty() { Offer::Accepted(self.rx_waker.take()) } else { Offer::AcceptedEvicting(self.rx_waker.take(), evicted) }
    }

    /// Drops everything queued (the process exited); returns the messages so
    /// the caller can drop them outside the lock.
    pub fn close(&mut self, cfg: &MailboxConfig) -> VecDeque<M> {
        if let Some(budget) = &cfg.shared_budget {
            budget.release(self.bytes as usize);
        }
        self.bytes = 0;
        self.rx_waker = None;
        std::mem::take(&mut self.items)
    }
}
