//! A running process's view of itself: its mailbox, its signals, and the
//! operations that need a "self" (link, monitor, trap exits, spawn_link).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::exit::{MonitorRef, Signal};
use crate::mailbox::Envelope;
use crate::node::SpawnError;
use crate::node::SpawnOpts;
use crate::process::{AnyProcess, Process, Watcher};
use crate::{Addr, ExitReason, IntoExit, Message, Node, Pid};

/// What [`Ctx::recv_event`] returns: a message or a system message.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<M> {
    /// An ordinary message.
    Message(M),
    /// A linked process exited (or an exit signal arrived) while trapping exits.
    Exit {
        /// Who exited or sent the signal.
        from: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// A monitored process ended.
    Down {
        /// The monitor that fired.
        monitor: MonitorRef,
        /// The process that ended.
        pid: Pid,
        /// Why (`NoProc` if it was already gone when monitored).
        reason: ExitReason,
    },
}

impl<M> From<Signal> for Event<M> {
    fn from(sig: Signal) -> Self {
        match sig {
            Signal::Exit { from, reason } => Event::Exit { from, reason },
            Signal::Down { monitor, pid, reason } => Event::Down { monitor, pid, reason },
        }
    }
}

/// Handed to a process body: its mailbox and its own operations.
///
/// The receive side batches: it takes every waiting message in one locked
/// swap and then hands them out without locking.
pub struct Ctx<M: Message> {
    proc: Arc<Process<M>>,
    batch: VecDeque<Envelope<M>>,
}

impl<M: Message> Ctx<M> {
    pub(crate) fn new(proc: Arc<Process<M>>) -> Self {
        Self { proc, batch: VecDeque::new() }
    }

    /// This process's pid.
    pub fn pid(&self) -> Pid {
        self.proc.pid()
    }

    /// The node this process runs on.
    pub fn node(&self) -> &Node {
        &self.proc.node
    }

    /// A typed handle on this process.
    pub fn addr(&self) -> Addr<M> {
        Addr::from_process(self.proc.clone())
    }

    /// Receives the next message, waiting as long as it takes.
    pub async fn recv(&mut self) -> M {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Receives the next message, or `None` after `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<M> {
        crate::rt::timeout(timeout, self.recv()).await.ok()
    }

    /// Takes a message if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<M> {
        if let Some(m) = self.pop_batch() {
            return Some(m);
        }
        self.refill(None);
        self.pop_batch()
    }

    /// Receives the next message or system message. System messages (exit
    /// signals while trapping, down messages) come first when both wait.
    pub async fn recv_event(&mut self) -> Event<M> {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Receives the next system message only (an exit signal while
    /// trapping, or a down), leaving ordinary messages queued: for a process
    /// that must keep reacting to signals while it takes no more work.
    pub async fn recv_signal(&mut self) -> Event<M> {
        poll_fn(|cx| self.poll_signal(cx)).await
    }

    fn poll_signal(&mut self, cx: &mut Context<'_>) -> Poll<Event<M>> {
        if let Some(sig) = self.pop_signal() {
            return Poll::Ready(sig.into());
        }
        {
            let mut st = self.proc.state.lock();
            match &st.queue.rx_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.queue.rx_waker = Some(cx.waker().clone()),
            }
        }
        // A signal queued before the registration did not wake us.
        self.pop_signal().map_or(Poll::Pending, |sig| Poll::Ready(sig.into()))
    }

    /// [`Ctx::recv_event`] with a timeout.
    pub async fn recv_event_timeout(&mut self, timeout: Duration) -> Option<Event<M>> {
        crate::rt::timeout(timeout, self.recv_event()).await.ok()
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event<M>> {
        if let Some(sig) = self.pop_signal() {
            return Poll::Ready(sig.into());
        }
        match self.poll_recv(cx) {
            Poll::Ready(m) => Poll::Ready(Event::Message(m)),
            // A signal queued after the first look but before the waker was
            // registered (under the lock) did not wake us: look again now.
            Poll::Pending => self.pop_signal().map_or(Poll::Pending, |sig| Poll::Ready(sig.into())),
        }
    }

    fn pop_signal(&mut self) -> Option<Signal> {
        if !self.proc.progress.has_signals.load(Ordering::Acquire) {
            return None;
        }
        let mut st = self.proc.state.lock();
        let extra = st.extra.as_mut()?;
        let sig = extra.signals.pop_front();
        if extra.signals.is_empty() {
            self.proc.progress.has_signals.store(false, Ordering::Release);
        }
        sig
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<M> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        if let Some(m) = self.pop_batch() {
            coop.made_progress();
            return Poll::Ready(m);
        }
        self.refill(Some(cx));
        match self.pop_batch() {
            Some(m) => {
                coop.made_progress();
                Poll::Ready(m)
            }
            None => Poll::Pending,
        }
    }

    /// Hands out the next message of the private batch and publishes progress
    /// (so senders see the room it frees).
    #[inline]
    fn pop_batch(&mut self) -> Option<M> {
        let Envelope { msg: m, context } = self.batch.pop_front()?;
        // The message's context is the process's current one until its next
        // receive (the runner keeps it across polls). Nothing to do in the
        // common case: no context on the message and none current.
        if context.is_some() || crate::context::is_set() {
            drop(crate::context::replace(context));
        }
        let bytes = m.total_bytes();
        // Only this process writes its progress counters, so load-add-store
        // needs no read-modify-write. (An accepted message's bytes fit the
        // 32-bit batch counter: see `MAILBOX_BYTES_MAX`.)
        let progress = &self.proc.progress;
        progress.consumed_bytes.store(progress.consumed_bytes.load(Ordering::Relaxed) + bytes as u32, Ordering::Release);
        progress.consumed.store(progress.consumed.load(Ordering::Relaxed) + 1, Ordering::Release);
        if let Some(budget) = &self.proc.config.shared_budget {
            budget.release(bytes);
        }
        // No fence here: it would drain the store buffer on every message
        // (a third of the throughput). See the `mailbox` docs for the
        // handshake this leaves to the next mailbox look.
        if progress.senders_waiting.load(Ordering::Relaxed) {
            self.proc.wake_senders();
        }
        Some(m)
    }

    /// Takes the next batch from the shared queue (the private batch is
    /// empty). Registers `cx`'s waker if there is nothing.
    fn refill(&mut self, cx: Option<&mut Context<'_>>) {
        debug_assert!(self.batch.is_empty());
        let cfg = &self.proc.config;
        let mut st = self.proc.state.lock();
        // The batch is used up (each of its messages went out through
        // `pop_batch`): what it held is now received.
        let taken = st.queue.taken;
        st.life.add_received(taken);
        let q = &mut st.queue;
        q.taken = 0;
        q.seen = 0;
        q.taken_bytes = 0;
        self.proc.progress.consumed.store(0, Ordering::Release);
        self.proc.progress.consumed_bytes.store(0, Ordering::Release);
        let waiters = match st.extra.as_mut() {
            Some(extra) if !extra.send_waiters.is_empty() => {
                self.proc.progress.senders_waiting.store(false, Ordering::Relaxed);
                std::mem::take(&mut extra.send_waiters)
            }
            _ => Vec::new(),
        };
        let q = &mut st.queue;
        if q.items.is_empty() {
            if let Some(cx) = cx {
                match &q.rx_waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => q.rx_waker = Some(cx.waker().clone()),
                }
            }
            if let Some(limit) = cfg.shrink_to {
                q.items.shrink_to(limit);
                self.batch.shrink_to(limit);
            }
        } else if cfg.overflow == crate::Overflow::DropOldest {
            // One at a time, so the oldest unreceived message stays droppable.
            let m = q.items.pop_front().expect("non-empty");
            let bytes = m.total_bytes() as u32;
            q.bytes -= bytes;
            q.taken = 1;
            q.taken_bytes = bytes;
            self.batch.push_back(m);
        } else {
            std::mem::swap(&mut q.items, &mut self.batch);
            q.taken = u32::try_from(self.batch.len()).expect("a batch is at most the capacity, at most u32::MAX");
            q.taken_bytes = q.bytes;
            q.bytes = 0;
        }
        drop(st);
        waiters.into_iter().for_each(std::task::Waker::wake);
    }

    /// Turns exit signals into [`Event::Exit`] messages (`true`) or back into
    /// exits (`false`). Returns the previous setting.
    pub fn trap_exit(&mut self, on: bool) -> bool {
        self.proc.state.lock().life.set_trap_exit(on)
    }

    /// Links this process and `other`: when either exits, the other gets an
    /// exit signal. Fails with `NoProc` if `other` is not alive. For a pid on
    /// another node it fails with `NoConnection` if that node is not
    /// connected; if the remote process is gone, a `NoProc` exit signal
    /// arrives instead (as in OTP).
    pub fn link(&mut self, other: Pid) -> Result<(), ExitReason> {
        if other == self.pid() {
            return Ok(());
        }
        // Our end first, so a signal from `other` exiting right after its
        // end is added finds the link here.
        self.proc.add_link(other);
        let shared = &self.proc.node.shared;
        if let Some(d) = shared.remote(other) {
            if d.link(self.pid(), other) {
                return Ok(());
            }
            self.proc.remove_link(other);
            return Err(ExitReason::NoConnection);
        }
        if other.node() != shared.id {
            self.proc.remove_link(other);
            return Err(ExitReason::NoConnection);
        }
        if shared.get(other).is_some_and(|t| t.add_link(self.pid())) {
            return Ok(());
        }
        self.proc.remove_link(other);
        Err(ExitReason::NoProc)
    }

    /// Removes a link (both ends). Unlinking a pid that is not linked is a no-op.
    pub fn unlink(&mut self, other: Pid) {
        self.proc.remove_link(other);
        if let Some(d) = self.proc.node.shared.remote(other) {
            d.unlink(self.pid(), other);
        } else if let Some(t) = self.proc.node.shared.get(other) {
            t.remove_link(self.pid());
        }
    }

    /// Monitors `target`: one [`Event::Down`] arrives when it ends, or at once
    /// with `NoProc` if it is not alive (with `NoConnection` if it lives on a
    /// node that is not connected, or when that node goes down).
    pub fn monitor(&mut self, target: Pid) -> MonitorRef {
        let shared = &self.proc.node.shared;
        let mref = shared.new_ref();
        let me = self.pid();
        // Held before it is installed, so a Down racing in finds it.
        self.proc.state.lock().extra().monitors.push((mref, target));
        let failed = if target.node() != shared.id {
            let installed = shared.remote(target).is_some_and(|d| d.monitor(me, target, mref));
            (!installed).then_some(ExitReason::NoConnection)
        } else {
            let installed = shared.get(target).is_some_and(|t| t.add_watcher(mref, Watcher::Process(me)).is_ok());
            (!installed).then_some(ExitReason::NoProc)
        };
        if let Some(reason) = failed {
            self.proc.down(mref, target, reason);
        }
        mref
    }

    /// Removes a monitor and discards its `Down` if it already arrived.
    pub fn demonitor(&mut self, monitor: MonitorRef) {
        let target = {
            let mut st = self.proc.state.lock();
            let extra = st.extra();
            extra.signals.retain(|s| !matches!(s, Signal::Down { monitor: m, .. } if *m == monitor));
            let pos = extra.monitors.iter().position(|(m, _)| *m == monitor);
            pos.map(|i| extra.monitors.swap_remove(i).1)
        };
        let Some(target) = target else { return };
        if let Some(d) = self.proc.node.shared.remote(target) {
            d.demonitor(self.pid(), target, monitor);
        } else if let Some(t) = self.proc.node.shared.get(target) {
            t.remove_watcher(monitor);
        }
    }

    /// Spawns a process linked to this one (the link exists before it runs).
    pub fn spawn_link<N, F, Fut>(&self, body: F) -> Addr<N>
    where
        N: Message,
        F: FnOnce(Ctx<N>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExit,
    {
        let opts = SpawnOpts { link: Some(self.pid()), ..SpawnOpts::default() };
        self.proc.node.spawn_with(opts, body).expect("default mailbox, no name or group: cannot fail")
    }

    /// Spawns a linked process with options.
    pub fn spawn_link_with<N, F, Fut>(&self, mut opts: SpawnOpts, body: F) -> Result<Addr<N>, SpawnError>
    where
        N: Message,
        F: FnOnce(Ctx<N>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExit,
    {
        opts.link = Some(self.pid());
        self.proc.node.spawn_with(opts, body)
    }

    /// Runs blocking `work` on the blocking pool and delivers `wrap(result)`
    /// to this process as a message, waiting for room in the mailbox (the
    /// blocking thread waits with it). If the process has exited by then,
    /// the result is dropped. If `work` or `wrap` panics, this process gets
    /// an exit signal with the `Panic` reason, as if it had panicked itself.
    pub fn offload<R, W>(&self, work: W, wrap: impl FnOnce(R) -> M + Send + 'static)
    where
        R: Send + 'static,
        W: FnOnce() -> R + Send + 'static,
    {
        let me = self.addr();
        let node = self.proc.node.clone();
        let handle = tokio::runtime::Handle::current();
        crate::rt::spawn_blocking(move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wrap(work()))) {
            Ok(msg) => {
                let _ = handle.block_on(me.send(msg));
            }
            Err(payload) => {
                let reason = ExitReason::Panic(crate::process::panic_message(payload.as_ref()).into());
                node.shared.exit_from(me.pid(), me.pid(), reason);
            }
        });
    }

    /// Sends an exit signal from this process to `pid` (see [`Node::exit`]).
    pub fn exit(&self, pid: Pid, reason: ExitReason) -> bool {
        self.proc.node.shared.exit_from(self.pid(), pid, reason)
    }
}

impl<M: Message> Drop for Ctx<M> {
    fn drop(&mut self) {
        // Messages still in the private batch die with the process; give
        // their bytes back to a shared budget.
        if let Some(budget) = &self.proc.config.shared_budget {
            let bytes: usize = self.batch.iter().map(Message::total_bytes).sum();
            budget.release(bytes);
        }
    }
}
