//! The process control block and its life cycle.
//!
//! A process is one tokio task (its body wrapped in a [`Runner`]) plus one
//! `Arc<Process<M>>` holding its mailbox and its relations (links, monitors,
//! names, groups) under a single lock. The node's table maps pids to
//! `Arc<dyn AnyProcess>`, the untyped view the rest of the runtime uses.
//!
//! # Invariants
//! - Exactly one call to [`finish`] runs per process, from its own task
//!   (on a migrating pool, the last of the tasks it ran in: a move ends a
//!   task without `finish`): when the body returns, panics, or is dropped
//!   (killed). It marks the
//!   process exited under the lock, so every later link, monitor,
//!   registration or send sees a dead process and fails cleanly.
//! - A process is killed by recording the reason and aborting its task; the
//!   abort drops the body at its next await point and [`Runner`]'s `Drop`
//!   runs `finish` with the recorded reason.
//! - Locks are never nested across two processes: relations are taken out
//!   under one lock and delivered to the others after it is released.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::exit::Signal;
use crate::mailbox::{Envelope, MailboxConfig, Progress, Queue};
use crate::node::NodeShared;
use crate::{ExitReason, IntoExit, Message, MonitorRef, Pid};

/// Bound on queued system messages (exit and down signals) per process.
/// One more kills the process with [`ExitReason::SignalOverflow`] (see
/// `foundation::exit`): a signal is never dropped while it carries on.
pub const SIGNAL_QUEUE_MAX: usize = 65_536;

/// A set of pids that is a small vector while small (most processes have
/// one link, to their supervisor) and a B-tree when large (a supervisor links
/// to every child, and each add and remove must not cost O(children)).
#[derive(Debug)]
pub(crate) enum PidSet {
    Few(Vec<Pid>),
    Many(std::collections::BTreeSet<Pid>),
}

/// Above this many members a `PidSet` becomes a B-tree.
const PID_SET_FEW_MAX: usize = 16;

impl Default for PidSet {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl PidSet {
    pub fn insert(&mut self, pid: Pid) {
        match self {
            Self::Few(v) if v.contains(&pid) => {}
            Self::Few(v) if v.len() < PID_SET_FEW_MAX => v.push(pid),
            Self::Few(v) => {
                let mut set: std::collections::BTreeSet<Pid> = v.drain(..).collect();
                set.insert(pid);
                *self = Self::Many(set);
            }
            Self::Many(s) => {
                s.insert(pid);
            }
        }
    }

    /// Removes `pid`; returns whether it was there.
    pub fn remove(&mut self, pid: &Pid) -> bool {
        match self {
            Self::Few(v) => match v.iter().position(|p| p == pid) {
                Some(i) => {
                    v.swap_remove(i);
                    true
                }
                None => false,
            },
            Self::Many(s) => s.remove(pid),
        }
    }

    pub fn to_vec(&self) -> Vec<Pid> {
        match self {
            Self::Few(v) => v.clone(),
            Self::Many(s) => s.iter().copied().collect(),
        }
    }
}

impl IntoIterator for PidSet {
    type Item = Pid;
    type IntoIter = Box<dyn Iterator<Item = Pid>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Self::Few(v) => Box::new(v.into_iter()),
            Self::Many(s) => Box::new(s.into_iter()),
        }
    }
}

/// A process's state: mailbox plus control, one lock.
pub(crate) struct State<M> {
    pub queue: Queue<Envelope<M>>,
    /// Exited, traps exits, and the messages received before the current batch.
    pub life: Life,
    pub task: Option<JoinHandle<()>>,
    /// Rarely used relations, allocated on first use to keep idle processes small.
    pub extra: Option<Box<Extra>>,
}

/// Whether a process has exited, whether it traps exits, and how many
/// messages it received in the batches before its current one: one word, so
/// that a process block stays within its allocator class (see
/// `process_block_stays_small`).
#[derive(Clone, Copy)]
pub(crate) struct Life(u64);

impl Life {
    const EXITED: u64 = 1 << 63;
    const TRAP_EXIT: u64 = 1 << 62;
    /// The count's 62 bits: at a billion messages a second, 146 years.
    const RECEIVED: u64 = Self::TRAP_EXIT - 1;

    #[inline]
    pub fn new(trap_exit: bool) -> Self {
        Self(if trap_exit { Self::TRAP_EXIT } else { 0 })
    }

    #[inline]
    pub fn exited(self) -> bool {
        self.0 & Self::EXITED != 0
    }

    #[inline]
    pub fn set_exited(&mut self) {
        self.0 |= Self::EXITED;
    }

    #[inline]
    pub fn trap_exit(self) -> bool {
        self.0 & Self::TRAP_EXIT != 0
    }

    /// Sets trapping on or off; returns the previous setting.
    #[inline]
    pub fn set_trap_exit(&mut self, on: bool) -> bool {
        let was = self.trap_exit();
        self.0 = if on { self.0 | Self::TRAP_EXIT } else { self.0 & !Self::TRAP_EXIT };
        was
    }

    #[inline]
    pub fn received(self) -> u64 {
        self.0 & Self::RECEIVED
    }

    /// Counts a used-up batch (saturating at the count's 62 bits).
    #[inline]
    pub fn add_received(&mut self, n: u32) {
        let count = (self.received() + u64::from(n)).min(Self::RECEIVED);
        self.0 = (self.0 & !Self::RECEIVED) | count;
    }
}

/// Who is told when a monitored process ends.
pub(crate) enum Watcher {
    Process(Pid),
    Oneshot(oneshot::Sender<ExitReason>),
}

#[derive(Default)]
pub(crate) struct Extra {
    /// How many times its supervisor restarted the child this process is
    /// (given at spawn; here because it is zero for most processes).
    pub restarts: u32,
    /// Messages dropped by the mailbox's overflow policy.
    pub dropped: u64,
    /// The exit reason recorded by whoever decided the process must end.
    pub kill_reason: Option<ExitReason>,
    /// Senders waiting for room in the mailbox.
    pub send_waiters: Vec<Waker>,
    pub signals: VecDeque<Signal>,
    pub signals_dropped: u64,
    pub links: PidSet,
    /// Monitors this process holds on others.
    pub monitors: Vec<(MonitorRef, Pid)>,
    /// Monitors others hold on this process.
    pub watchers: Vec<(MonitorRef, Watcher)>,
    pub names: Vec<String>,
    pub groups: Vec<String>,
    /// The process it was spawned linked to (`SpawnOpts::link`): a
    /// supervised child's supervisor.
    pub parent: Option<Pid>,
}

pub(crate) struct Process<M> {
    /// The local part of the pid (the node part comes from `node`).
    pub id: u64,
    /// The node the process lives on. Held here (not in the task future or
    /// the `Ctx`) to keep an idle process small; it is a cycle only while the
    /// process is in the node's table, i.e. alive.
    pub node: crate::Node,
    pub config: Arc<MailboxConfig>,
    pub progress: Progress,
    pub state: Mutex<State<M>>,
}

impl Extra {
    /// Bytes it holds (its own and its collections' slots, names' text).
    fn bytes(&self) -> usize {
        use std::mem::size_of;
        size_of::<Self>()
            + self.send_waiters.capacity() * size_of::<Waker>()
            + self.signals.capacity() * size_of::<Signal>()
            + match &self.links {
                PidSet::Few(v) => v.capacity() * size_of::<Pid>(),
                // A B-tree's nodes hold their keys with some slack.
                PidSet::Many(s) => s.len() * 2 * size_of::<Pid>(),
            }
            + self.monitors.capacity() * size_of::<(MonitorRef, Pid)>()
            + self.watchers.capacity() * size_of::<(MonitorRef, Watcher)>()
            + self.names.iter().chain(&self.groups).map(|n| size_of::<String>() + n.capacity()).sum::<usize>()
    }
}

impl<M> State<M> {
    pub fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Counts what an offer's overflow policy dropped.
    pub fn count_drops(&mut self, offer: &crate::mailbox::Offer<Envelope<M>>, counters: &crate::stats::Counters) {
        let n = offer.dropped();
        if n > 0 {
            self.extra().dropped += n;
            counters.dropped(n);
        }
    }
}

impl<M> Process<M> {
    /// The process's pid.
    #[inline]
    pub fn pid(&self) -> Pid {
        Pid::new(self.node.id(), self.id)
    }
}

impl<M: Message> Process<M> {
    pub fn new(node: crate::Node, pid: Pid, config: Arc<MailboxConfig>, trap_exit: bool, restarts: u32) -> Self {
        debug_assert_eq!(pid.node(), node.id());
        // Restarted children keep their count with their other rare fields
        // (a supervised child has its parent there anyway).
        let extra = (restarts > 0).then(|| Box::new(Extra { restarts, ..Extra::default() }));
        Self {
            id: pid.id(),
            node,
            config,
            progress: Progress::default(),
            state: Mutex::new(State { queue: Queue::new(), life: Life::new(trap_exit), task: None, extra }),
        }
    }

    /// Wakes senders waiting for room.
    pub fn wake_senders(&self) {
        let waiters = {
            let mut st = self.state.lock();
            self.progress.senders_waiting.store(false, Ordering::Relaxed);
            st.extra.as_mut().map(|e| std::mem::take(&mut e.send_waiters)).unwrap_or_default()
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}

/// Records `reason` as the process's end and aborts its task.
/// Caller holds the lock; returns true if this call decided the end.
fn kill_locked<M>(st: &mut State<M>, reason: ExitReason) -> bool {
    if st.life.exited() || st.extra.as_ref().is_some_and(|e| e.kill_reason.is_some()) {
        return false;
    }
    st.extra().kill_reason = Some(reason);
    if let Some(task) = &st.task {
        task.abort();
    }
    true
}

/// Queues a system message and wakes the receiver. Caller holds the lock.
fn push_signal_locked<M>(st: &mut State<M>, has_signals: &AtomicBool, sig: Signal) -> Option<Waker> {
    let extra = st.extra();
    if extra.signals.len() >= SIGNAL_QUEUE_MAX {
        extra.signals_dropped += 1;
        // Fail-stop: the process cannot learn of this signal, so it ends.
        kill_locked(st, ExitReason::SignalOverflow);
        return None;
    }
    extra.signals.push_back(sig);
    has_signals.store(true, Ordering::Release);
    st.queue.rx_waker.take()
}

/// How an exit signal was sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SignalKind {
    /// Through a link, when the sender exited.
    Link,
    /// Explicitly, with `Node::exit`.
    Explicit,
}

/// The untyped view of a process, used by the node's table.
pub(crate) trait AnyProcess: Send + Sync + 'static {
    /// The local part of the pid.
    fn local_id(&self) -> u64;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn message_type(&self) -> &'static str;
    /// Delivers an exit signal; see `exit.rs` for the semantics.
    fn exit_signal(&self, from: Pid, reason: ExitReason, kind: SignalKind);
    /// Queues a down message, if the process still holds that monitor.
    fn down(&self, monitor: MonitorRef, pid: Pid, reason: ExitReason);
    /// Adds a link end; false if the process has exited.
    fn add_link(&self, other: Pid) -> bool;
    fn remove_link(&self, other: Pid);
    /// Adds a watcher; gives it back if the process has exited.
    fn add_watcher(&self, monitor: MonitorRef, watcher: Watcher) -> Result<(), Watcher>;
    fn remove_watcher(&self, monitor: MonitorRef);
    /// Records a name or group on the process; false if it has exited.
    fn note_membership(&self, name: Option<&str>, group: Option<&str>) -> bool;
    fn forget_membership(&self, name: Option<&str>, group: Option<&str>);
    fn info(&self) -> Option<ProcessInfo>;
}

/// A snapshot of a live process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process.
    pub pid: Pid,
    /// The Rust type of the messages it receives.
    pub message_type: &'static str,
    /// Messages accepted and not yet received.
    pub mailbox_len: usize,
    /// Bytes accepted and not yet received.
    pub mailbox_bytes: usize,
    /// Slots allocated for the sender-side queue (shrinks with `shrink_to`).
    pub mailbox_allocated: usize,
    /// Messages dropped by the overflow policy.
    pub dropped: u64,
    /// Messages it has received (taken from its mailbox) since it started.
    pub received: u64,
    /// Times its task has been polled (each time it ran) since it started.
    /// A poll is counted when it returns, so what the process did during a
    /// poll (a reply it sent) can be seen just before that poll is counted.
    pub polls: u64,
    /// System messages (exit, down) waiting.
    pub signals_pending: usize,
    /// Signals that found the queue at [`SIGNAL_QUEUE_MAX`] (the first one
    /// killed the process with `SignalOverflow`).
    pub signals_dropped: u64,
    /// Whether exit signals arrive as messages.
    pub trap_exit: bool,
    /// Linked processes.
    pub links: Vec<Pid>,
    /// Processes this one monitors.
    pub monitors: Vec<Pid>,
    /// Registered names.
    pub names: Vec<String>,
    /// How many times its supervisor restarted the child this process is.
    pub restarts: u32,
    /// The process it was spawned linked to (`SpawnOpts::link`): for a
    /// supervised child, its supervisor. Its place in a supervision tree.
    pub parent: Option<Pid>,
    /// Bytes held for it: the process itself, its mailbox's slots and the
    /// messages waiting in them, and its relations (not its task's own
    /// state, which only the task knows).
    pub memory_bytes: usize,
}

impl<M: Message> AnyProcess for Process<M> {
    fn local_id(&self) -> u64 {
        self.id
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn message_type(&self) -> &'static str {
        std::any::type_name::<M>()
    }

    fn exit_signal(&self, from: Pid, reason: ExitReason, kind: SignalKind) {
        let mut st = self.state.lock();
        if st.life.exited() {
            return;
        }
        // A link's signal counts only while the link stands; taking it down
        // here makes `unlink` final: no exit signal arrives after it.
        if kind == SignalKind::Link && !st.extra.as_mut().is_some_and(|e| e.links.remove(&from)) {
            return;
        }
        let waker = if kind == SignalKind::Explicit && reason == ExitReason::Kill {
            kill_locked(&mut st, ExitReason::Killed);
            None
        } else if st.life.trap_exit() {
            push_signal_locked(&mut st, &self.progress.has_signals, Signal::Exit { from, reason })
        } else if reason == ExitReason::Normal {
            None
        } else {
            // A linked process killed with `Kill` exits `Killed`; the signal it
            // sends on is `Killed`, which is an ordinary, trappable reason.
            kill_locked(&mut st, reason);
            None
        };
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn down(&self, monitor: MonitorRef, pid: Pid, reason: ExitReason) {
        let mut st = self.state.lock();
        if st.life.exited() {
            return;
        }
        // Delivered only while the monitor is held, and the monitor ends with
        // its Down: after `demonitor` returns, no Down for it can arrive.
        let Some(held) = st.extra.as_mut().and_then(|e| e.monitors.iter().position(|(m, _)| *m == monitor)) else {
            return;
        };
        st.extra().monitors.swap_remove(held);
        let waker = push_signal_locked(&mut st, &self.progress.has_signals, Signal::Down { monitor, pid, reason });
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn add_link(&self, other: Pid) -> bool {
        let mut st = self.state.lock();
        if st.life.exited() {
            return false;
        }
        st.extra().links.insert(other);
        true
    }

    fn remove_link(&self, other: Pid) {
        if let Some(extra) = self.state.lock().extra.as_mut() {
            extra.links.remove(&other);
        }
    }

    fn add_watcher(&self, monitor: MonitorRef, watcher: Watcher) -> Result<(), Watcher> {
        let mut st = self.state.lock();
        if st.life.exited() {
            return Err(watcher);
        }
        st.extra().watchers.push((monitor, watcher));
        Ok(())
    }

    fn remove_watcher(&self, monitor: MonitorRef) {
        if let Some(extra) = self.state.lock().extra.as_mut() {
            extra.watchers.retain(|(m, _)| *m != monitor);
        }
    }

    fn note_membership(&self, name: Option<&str>, group: Option<&str>) -> bool {
        let mut st = self.state.lock();
        if st.life.exited() {
            return false;
        }
        let extra = st.extra();
        if let Some(n) = name {
            extra.names.push(n.to_owned());
        }
        if let Some(g) = group
            && !extra.groups.iter().any(|x| x == g)
        {
            extra.groups.push(g.to_owned());
        }
        true
    }

    fn forget_membership(&self, name: Option<&str>, group: Option<&str>) {
        if let Some(extra) = self.state.lock().extra.as_mut() {
            extra.names.retain(|n| Some(n.as_str()) != name);
            extra.groups.retain(|g| Some(g.as_str()) != group);
        }
    }

    fn info(&self) -> Option<ProcessInfo> {
        let st = self.state.lock();
        if st.life.exited() {
            return None;
        }
        let extra = st.extra.as_deref();
        Some(ProcessInfo {
            pid: self.pid(),
            message_type: std::any::type_name::<M>(),
            mailbox_len: st.queue.len(&self.progress),
            mailbox_bytes: st.queue.outstanding_bytes(&self.progress),
            mailbox_allocated: st.queue.items.capacity(),
            dropped: extra.map_or(0, |e| e.dropped),
            received: st.life.received() + u64::from(self.progress.consumed.load(Ordering::Acquire).min(st.queue.taken)),
            polls: self.progress.polls.load(Ordering::Relaxed),
            signals_pending: extra.map_or(0, |e| e.signals.len()),
            signals_dropped: extra.map_or(0, |e| e.signals_dropped),
            trap_exit: st.life.trap_exit(),
            links: extra.map(|e| e.links.to_vec()).unwrap_or_default(),
            monitors: extra.map(|e| e.monitors.iter().map(|(_, p)| *p).collect()).unwrap_or_default(),
            names: extra.map(|e| e.names.clone()).unwrap_or_default(),
            restarts: extra.map_or(0, |e| e.restarts),
            parent: extra.and_then(|e| e.parent),
            memory_bytes: std::mem::size_of::<Self>()
                + st.queue.items.capacity() * std::mem::size_of::<Envelope<M>>()
                + st.queue.outstanding_bytes(&self.progress)
                + extra.map_or(0, Extra::bytes),
        })
    }
}

mod task;
pub(crate) use task::{Roaming, Runner, SpawnGuard, attach_task, panic_message};

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle process costs its `Process` block plus its task: keep the block
    /// within the allocator's 160-byte class (see the `process.idle_bytes` bench).
    #[test]
    fn process_block_stays_small() {
        let size = std::mem::size_of::<Process<u64>>() + 2 * std::mem::size_of::<usize>(); // + Arc counts
        eprintln!(
            "Process<u64> block: {size} B, State: {} B, Queue: {} B",
            std::mem::size_of::<State<u64>>(),
            std::mem::size_of::<Queue<u64>>()
        );
        assert!(size <= 160, "Process block grew to {size} B");
    }

    /// The flags and the count share a word without touching each other.
    #[test]
    fn life_keeps_its_flags_and_count_apart() {
        let mut life = Life::new(true);
        life.add_received(u32::MAX);
        life.add_received(5);
        assert!(life.trap_exit() && !life.exited());
        assert_eq!(life.received(), u64::from(u32::MAX) + 5);
        assert!(life.set_trap_exit(false));
        life.set_exited();
        assert!(life.exited() && !life.trap_exit());
        assert_eq!(life.received(), u64::from(u32::MAX) + 5);
        let mut full = Life(Life::RECEIVED - 1);
        full.add_received(10);
        assert_eq!((full.received(), full.exited(), full.trap_exit()), (Life::RECEIVED, false, false), "saturates in its bits");
    }

    /// A tokio task is its future plus about 112 bytes, rounded up to 128:
    /// a minimal process's `Runner` must stay within 136 bytes for its task
    /// to fit 256 (the other half of the `process.idle_bytes` budget).
    #[test]
    fn minimal_runner_fits_a_256_byte_task() {
        async fn idle(mut ctx: crate::Ctx<()>) {
            ctx.recv().await;
        }
        let node = crate::Node::new("x");
        let proc = Arc::new(Process::<()>::new(node.clone(), Pid::new(node.id(), 1), Arc::new(MailboxConfig::default()), false, 0));
        let runner = Runner::new(proc.clone(), idle(crate::Ctx::new(proc)));
        let size = std::mem::size_of_val(&runner);
        assert!(size <= 136, "minimal Runner grew to {size} B");
        runner.proc.state.lock().life.set_exited(); // not spawned: skip finish
    }
}
