//! Request/reply: [`Reply`], the half a request carries, and [`Answer`],
//! the half the caller awaits. One allocation per request, shared by the
//! reply and its deadline: the node's timer holds the same slot (see
//! `rt/deadline.rs`), so a call answered in time costs no timer of its own.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use foundation::{reply_channel, Ctx, Node, Reply};
//! let node = Node::new("doc");
//! let double = node.spawn(|mut ctx: Ctx<(u64, Reply<u64>)>| async move {
//!     loop { let (n, r) = ctx.recv().await; let _ = r.send(n * 2); }
//! });
//! // By hand, with no deadline: `Addr::call` and `Addr::request` do this
//! // with one.
//! let (reply, answer) = reply_channel();
//! double.send((21, reply)).await.unwrap();
//! assert_eq!(answer.await, Ok(42));
//! # });
//! ```

use std::cell::UnsafeCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};

use crate::addr::CallError;
use crate::rt::deadline::Expire;

/// The value is in the slot (the replier's last write).
const VALUE: u8 = 1;
/// The replier dropped its [`Reply`] without answering.
const CLOSED: u8 = 2;
/// The deadline passed (set by the node's timer).
const EXPIRED: u8 = 4;
/// The caller dropped its [`Answer`].
const ABANDONED: u8 = 8;
/// `waker` holds the caller's waker: settlers may read it, the caller may
/// not change it until it clears this bit.
const WAKER_SET: u8 = 16;
/// Any of the ways a slot settles.
const SETTLED: u8 = VALUE | CLOSED | EXPIRED;

/// What a reply and its answer share.
struct Slot<R> {
    state: AtomicU8,
    /// Written once by the replier before it sets `VALUE`; read once by
    /// the caller after it sees `VALUE`.
    value: UnsafeCell<Option<R>>,
    /// The caller's waker: written by the caller only while `WAKER_SET`
    /// is clear, read by settlers only when they see it set (tokio's
    /// oneshot protocol, without a lock).
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: `value` is written by one side (the `Reply`, before `VALUE` is
// published with release) and read by the other (the `Answer`, after seeing
// `VALUE` with acquire), never both at once. `waker` is written by the
// `Answer` only while `WAKER_SET` is clear and read by settlers only after
// seeing it set (see `Answer::register`).
unsafe impl<R: Send> Send for Slot<R> {}
unsafe impl<R: Send> Sync for Slot<R> {}

impl<R> Slot<R> {
    /// Sets `bit` and wakes the caller.
    fn settle(&self, bit: u8) {
        let before = self.state.fetch_or(bit, Ordering::AcqRel);
        if before & WAKER_SET != 0 && before & SETTLED == 0 {
            // SAFETY: `WAKER_SET` was set when this settled the slot, so the
            // caller wrote the waker before and will not write it again
            // (it clears the bit first, and then sees the slot settled).
            if let Some(w) = unsafe { &*self.waker.get() } {
                w.wake_by_ref();
            }
        }
    }
}

impl<R: Send> Expire for Slot<R> {
    fn settled(&self) -> bool {
        self.state.load(Ordering::Relaxed) & (VALUE | CLOSED | ABANDONED) != 0
    }

    fn expire(&self) {
        self.settle(EXPIRED);
    }
}

/// The reply half of a request: put it in the message, answer with
/// [`Reply::send`]. Dropping it unanswered tells the caller
/// ([`CallError::NoReply`]).
pub struct Reply<R> {
    slot: Option<Arc<Slot<R>>>,
}

impl<R> std::fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reply")
    }
}

impl<R> Reply<R> {
    /// Answers. `Err` gives the value back when the caller is gone (it
    /// dropped its [`Answer`], or gave up at its deadline).
    pub fn send(mut self, value: R) -> Result<(), R> {
        let Some(slot) = self.slot.take() else { return Err(value) };
        if slot.state.load(Ordering::Acquire) & (ABANDONED | EXPIRED) != 0 {
            return Err(value);
        }
        // SAFETY: only this `Reply` writes, once (it is consumed), and the
        // caller reads only after `VALUE` below.
        unsafe { *slot.value.get() = Some(value) };
        slot.settle(VALUE);
        Ok(())
    }

    /// Whether the caller stopped waiting (dropped its [`Answer`], or its
    /// deadline passed): the work behind the answer can be skipped.
    pub fn is_closed(&self) -> bool {
        self.slot.as_ref().is_none_or(|s| s.state.load(Ordering::Acquire) & (ABANDONED | EXPIRED) != 0)
    }
}

impl<R> Drop for Reply<R> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.settle(CLOSED);
        }
    }
}

/// The caller's half: a future of the reply, or of why none came.
///
/// Await it when you need the answer; a request sent with
/// [`Addr::request`](crate::Addr::request) carries on meanwhile. Dropping it
/// tells the replier ([`Reply::is_closed`]).
#[must_use = "an answer does nothing unless awaited"]
pub struct Answer<R: Send + 'static> {
    slot: Arc<Slot<R>>,
}

impl<R: Send + 'static> std::fmt::Debug for Answer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answer")
    }
}

/// A reply and the answer it goes to, with no deadline (the answer waits
/// until the reply is sent or dropped).
pub fn reply_channel<R: Send + 'static>() -> (Reply<R>, Answer<R>) {
    let slot = Arc::new(Slot { state: AtomicU8::new(0), value: UnsafeCell::new(None), waker: UnsafeCell::new(None) });
    (Reply { slot: Some(slot.clone()) }, Answer { slot })
}

impl<R: Send + 'static> Answer<R> {
    /// Gives up at `after` from now, on `rt`'s shared timer.
    pub(crate) fn with_deadline(self, rt: &crate::rt::Rt, after: std::time::Duration) -> Self {
        rt.arm_deadline(after, self.slot.clone());
        self
    }

    /// Whether the deadline passed with no reply; registers `cx` to be woken
    /// when it does (for a caller still waiting to send its request).
    pub(crate) fn poll_expired(&self, cx: &mut Context<'_>) -> bool {
        self.register(cx) & EXPIRED != 0
    }

    /// Makes `cx`'s waker the one settlers wake; returns the state after,
    /// in which a settled slot shows (then the waker may not be stored).
    fn register(&self, cx: &mut Context<'_>) -> u8 {
        let slot = &*self.slot;
        let mut state = slot.state.load(Ordering::Acquire);
        if state & SETTLED != 0 {
            return state;
        }
        if state & WAKER_SET != 0 {
            // SAFETY: reading our own waker; settlers only read it too.
            if unsafe { &*slot.waker.get() }.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return state;
            }
            // Take the waker back from the settlers before changing it.
            state = slot.state.fetch_and(!WAKER_SET, Ordering::AcqRel);
            if state & SETTLED != 0 {
                return state;
            }
        }
        // SAFETY: `WAKER_SET` is clear: no settler reads the waker.
        unsafe { *slot.waker.get() = Some(cx.waker().clone()) };
        slot.state.fetch_or(WAKER_SET, Ordering::AcqRel) | WAKER_SET
    }

    fn outcome(&self, state: u8) -> Option<Result<R, CallError>> {
        if state & VALUE != 0 {
            // SAFETY: `VALUE` was published (acquire) after the replier's
            // one write; only this `Answer` reads, and it is polled by one
            // task at a time (`&mut self` in `poll`).
            let value = unsafe { (*self.slot.value.get()).take() };
            Some(value.ok_or(CallError::NoReply))
        } else if state & CLOSED != 0 {
            Some(Err(CallError::NoReply))
        } else if state & EXPIRED != 0 {
            Some(Err(CallError::Timeout))
        } else {
            None
        }
    }
}

impl<R: Send + 'static> Future for Answer<R> {
    type Output = Result<R, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A slot settled before or during the registration shows in the
        // state it returns.
        let state = self.register(cx);
        match self.outcome(state) {
            Some(done) => Poll::Ready(done),
            None => Poll::Pending,
        }
    }
}

impl<R: Send + 'static> Drop for Answer<R> {
    fn drop(&mut self) {
        // The replier may skip its work; the timer drops the slot unfired.
        self.slot.state.fetch_or(ABANDONED, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reply_arrives_and_a_dropped_reply_says_so() {
        let (reply, answer) = reply_channel::<u32>();
        assert_eq!(reply.send(7), Ok(()));
        assert_eq!(answer.await, Ok(7));
        let (reply, answer) = reply_channel::<u32>();
        drop(reply);
        assert_eq!(answer.await, Err(CallError::NoReply));
    }

    #[tokio::test]
    async fn a_reply_to_a_caller_that_left_comes_back() {
        let (reply, answer) = reply_channel::<String>();
        assert!(!reply.is_closed());
        drop(answer);
        assert!(reply.is_closed());
        assert_eq!(reply.send("late".into()), Err("late".into()));
    }

    #[test]
    fn a_reply_sent_from_another_thread_wakes_the_caller() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        rt.block_on(async {
            // The caller waits on the runtime's driver thread; the replies
            // come from its workers, racing the caller's registration.
            for i in 0..10_000u64 {
                let (reply, answer) = reply_channel::<u64>();
                let sent = crate::rt::spawn(async move { reply.send(i) });
                assert_eq!(answer.await, Ok(i));
                assert_eq!(sent.await.unwrap(), Ok(()));
            }
        });
    }

    #[test]
    fn an_unsent_value_is_dropped_with_the_slot() {
        let value = Arc::new(());
        let (reply, answer) = reply_channel::<Arc<()>>();
        reply.send(value.clone()).unwrap();
        drop(answer);
        assert_eq!(Arc::strong_count(&value), 1, "the value left in the slot was dropped");
    }
}
