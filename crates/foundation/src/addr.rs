//! Typed send handles: the local fast path. A send moves the message into
//! the receiver's mailbox; nothing is serialized or copied.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::mailbox::{Envelope, Offer, SendError};
use crate::process::Process;
use crate::reply::{Answer, Reply, reply_channel};
use crate::{Message, Pid};

/// A typed handle to a local process receiving `M`.
///
/// Holding an `Addr` keeps the process's mailbox memory alive, not the
/// process: sends to an exited process fail with [`SendError::NoProc`].
pub struct Addr<M: Message> {
    proc: Arc<Process<M>>,
}

impl<M: Message> Clone for Addr<M> {
    fn clone(&self) -> Self {
        Self { proc: self.proc.clone() }
    }
}

impl<M: Message> std::fmt::Debug for Addr<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Addr({})", self.proc.pid())
    }
}

/// Why a [`Addr::call`] got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No reply within the timeout (the request may still be processed).
    #[error("call timed out")]
    Timeout,
    /// The process was not alive to take the request.
    #[error("no such process")]
    NoProc,
    /// The process dropped the reply handle without answering (it exited
    /// or discarded the request).
    #[error("process dropped the request without replying")]
    NoReply,
    /// The request is over the mailbox's per-message byte limit.
    #[error("request is too large for the mailbox")]
    TooLarge,
    /// The mailbox's drop policy discarded the request.
    #[error("request dropped by the mailbox's overflow policy")]
    Dropped,
}

impl<M: Message> Addr<M> {
    pub(crate) fn from_process(proc: Arc<Process<M>>) -> Self {
        Self { proc }
    }

    /// The process's pid.
    pub fn pid(&self) -> Pid {
        self.proc.pid()
    }

    /// Whether the process is alive.
    pub fn is_alive(&self) -> bool {
        !self.proc.state.lock().life.exited()
    }

    /// Sends without waiting: `Err(Full)` under backpressure, never blocks.
    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        // Built before the lock: the context lookup stays out of the
        // critical section.
        let envelope = Envelope::new(msg);
        let mut st = self.proc.state.lock();
        if st.life.exited() {
            return Err(SendError::NoProc(Some(envelope.msg)));
        }
        let offer = st.queue.offer(&self.proc.config, &self.proc.progress, envelope);
        st.count_drops(&offer, &self.proc.node.shared.counters);
        drop(st);
        self.settle(offer)
    }

    /// Turns an offer into the send's result. Called with the lock released:
    /// it wakes the receiver and drops evicted messages.
    fn settle(&self, offer: Offer<Envelope<M>>) -> Result<(), SendError<M>> {
        match offer {
            Offer::Accepted(waker) => {
                if let Some(w) = waker {
                    w.wake();
                }
                Ok(())
            }
            Offer::AcceptedEvicting(waker, evicted) => {
                if let Some(w) = waker {
                    w.wake();
                }
                drop(evicted);
                Ok(())
            }
            Offer::Full(m) | Offer::NoBudget(m) => {
                self.proc.node.shared.counters.full();
                Err(SendError::Full(m.msg))
            }
            Offer::Dropped(m, evicted) => {
                drop(evicted);
                Err(SendError::Dropped(m.msg))
            }
            Offer::TooLarge(m, bytes) => Err(SendError::TooLarge { msg: m.msg, bytes, limit: self.proc.config.max_message_bytes }),
        }
    }

    /// Sends, waiting for room while the mailbox is full (backpressure).
    /// Other policies never wait. Cancel-safe: dropping the future before
    /// it completes drops the message unsent.
    pub async fn send(&self, msg: M) -> Result<(), SendError<M>> {
        let mut slot = Some(Envelope::new(msg));
        poll_fn(|cx| self.poll_send(cx, &mut slot)).await
    }

    fn poll_send(&self, cx: &mut Context<'_>, slot: &mut Option<Envelope<M>>) -> Poll<Result<(), SendError<M>>> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let msg = slot.take().expect("send polled after completion");
        let mut st = self.proc.state.lock();
        if st.life.exited() {
            return Poll::Ready(Err(SendError::NoProc(Some(msg.msg))));
        }
        match st.queue.offer(&self.proc.config, &self.proc.progress, msg) {
            Offer::Accepted(waker) => {
                drop(st);
                coop.made_progress();
                if let Some(w) = waker {
                    w.wake();
                }
                Poll::Ready(Ok(()))
            }
            refused @ (Offer::Full(_) | Offer::NoBudget(_)) => match self.register_and_retry(&mut st, cx, refused) {
                Ok(offer) => {
                    st.count_drops(&offer, &self.proc.node.shared.counters);
                    drop(st);
                    coop.made_progress();
                    Poll::Ready(self.settle(offer))
                }
                Err(m) => {
                    self.proc.node.shared.counters.full();
                    *slot = Some(m);
                    Poll::Pending
                }
            },
            offer => {
                st.count_drops(&offer, &self.proc.node.shared.counters);
                drop(st);
                coop.made_progress();
                Poll::Ready(self.settle(offer))
            }
        }
    }

    /// The mailbox (or its shared budget) is full: register to be woken, then
    /// look once more, so room freed in between is not missed (see the
    /// `mailbox` docs). `Err` gives the message back to wait with it.
    #[cold]
    fn register_and_retry(
        &self,
        st: &mut crate::process::State<M>,
        cx: &Context<'_>,
        refused: Offer<Envelope<M>>,
    ) -> Result<Offer<Envelope<M>>, Envelope<M>> {
        let cfg = &self.proc.config;
        let (msg, over_budget) = match refused {
            Offer::Full(m) => (m, false),
            Offer::NoBudget(m) => (m, true),
            _ => unreachable!("only refusals are retried"),
        };
        if over_budget {
            // Not this mailbox's bounds: the shared budget. Wait on it.
            cfg.shared_budget.as_ref().expect("only a shared budget refuses a mailbox with room").wait(cx.waker());
        } else {
            let waiters = &mut st.extra().send_waiters;
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            self.proc.progress.senders_waiting.store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        match st.queue.offer(cfg, &self.proc.progress, msg) {
            Offer::Full(m) | Offer::NoBudget(m) => Err(m),
            offer => {
                if !over_budget {
                    // Room after all: withdraw, so the receiver does not wake
                    // a sender that is not waiting.
                    let waiters = &mut st.extra().send_waiters;
                    waiters.retain(|w| !w.will_wake(cx.waker()));
                    if waiters.is_empty() {
                        self.proc.progress.senders_waiting.store(false, Ordering::Relaxed);
                    }
                }
                Ok(offer)
            }
        }
    }

    /// Request/reply: builds a request around a fresh [`Reply`], sends it
    /// (waiting for room within the timeout) and waits for the answer.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use foundation::{Node, Reply, Ctx};
    /// use std::time::Duration;
    /// let node = Node::new("doc");
    /// let double = node.spawn(|mut ctx: Ctx<(u64, Reply<u64>)>| async move {
    ///     loop { let (n, r) = ctx.recv().await; let _ = r.send(n * 2); }
    /// });
    /// let got = double.call(|r| (21, r), Duration::from_secs(1)).await;
    /// assert_eq!(got, Ok(42));
    /// # });
    /// ```
    pub async fn call<R: Send + 'static>(&self, request: impl FnOnce(Reply<R>) -> M, timeout: Duration) -> Result<R, CallError> {
        self.request(request, timeout).await?.await
    }

    /// Sends a request now and returns its [`Answer`] to await later: a
    /// process can have several requests out at once. The deadline starts
    /// now and covers the wait for mailbox room too; it costs no timer of
    /// its own (the node's shared one, see `rt/deadline.rs`).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use foundation::{Node, Reply, Ctx};
    /// use std::time::Duration;
    /// let node = Node::new("doc");
    /// let double = node.spawn(|mut ctx: Ctx<(u64, Reply<u64>)>| async move {
    ///     loop { let (n, r) = ctx.recv().await; let _ = r.send(n * 2); }
    /// });
    /// let t = Duration::from_secs(1);
    /// let a = double.request(|r| (1, r), t).await.unwrap();
    /// let b = double.request(|r| (2, r), t).await.unwrap();
    /// assert_eq!((a.await, b.await), (Ok(2), Ok(4)));
    /// # });
    /// ```
    pub async fn request<R: Send + 'static>(&self, request: impl FnOnce(Reply<R>) -> M, timeout: Duration) -> Result<Answer<R>, CallError> {
        let (reply, answer) = reply_channel();
        let answer = answer.with_deadline(self.proc.node.rt(), timeout);
        let mut slot = Some(Envelope::new(request(reply)));
        let sent = poll_fn(|cx| match self.poll_send(cx, &mut slot) {
            Poll::Ready(sent) => Poll::Ready(sent.map_err(|e| match e {
                SendError::TooLarge { .. } => CallError::TooLarge,
                SendError::Dropped(_) => CallError::Dropped,
                _ => CallError::NoProc,
            })),
            // Waiting for room: the deadline covers that wait too.
            Poll::Pending if answer.poll_expired(cx) => Poll::Ready(Err(CallError::Timeout)),
            Poll::Pending => Poll::Pending,
        })
        .await;
        sent.map(|()| answer)
    }

    /// Whether two handles name the same process.
    pub fn same_process(&self, other: &Addr<M>) -> bool {
        Arc::ptr_eq(&self.proc, &other.proc)
    }
}

/// A resolved address and the message bound for it (for sends by pid).
pub(crate) struct Pending<M: Message> {
    addr: Addr<M>,
    msg: M,
}

impl<M: Message> Pending<M> {
    pub fn new(addr: Addr<M>, msg: M) -> Self {
        Self { addr, msg }
    }

    pub fn into_parts(self) -> (Addr<M>, M) {
        (self.addr, self.msg)
    }

    pub async fn send_owned(self) -> Result<(), SendError<M>> {
        self.addr.send(self.msg).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn call_error_messages_are_distinct() {
        use super::CallError::*;
        let all = [Timeout, NoProc, NoReply, TooLarge, Dropped].map(|e| e.to_string());
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
    }
}
