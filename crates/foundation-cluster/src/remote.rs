//! Remote processes: send to a pid or a registered name on another node,
//! and links, monitors and exit signals across nodes.
//!
//! # Messages
//! A message sent to a remote pid is encoded with postcard (a `Bytes`
//! message travels as the frame's raw payload, without serde). The receiving
//! node must know the message type: [`Cluster::register_message`] lets it
//! decode frames for processes whose mailbox takes `M`. The type travels as a
//! 64-bit hash of its Rust type name, so both nodes must run builds where the
//! type has the same path.
//!
//! # Ordering and loss (Erlang's guarantee)
//! - All traffic to one peer goes through one queue and one connection, so
//!   messages from one process to another arrive in the order sent, and a
//!   message is never delivered twice (nothing is re-sent).
//! - What a lost connection loses: the frames still queued for it or in
//!   flight when it broke. Those are frames sent after the last one the peer
//!   delivered and before the `Down` of that peer: a contiguous run of each
//!   sender's sequence. Messages sent after the connection is back arrive.
//!   Every process linked to or monitoring a process of that node learns of
//!   the loss (`NoConnection`), so a gap is never silent to those who ask.
//! - One case loses frames without a `Down`: when both nodes of a pair dial
//!   each other at once (a re-join, or a peer learned through a third node
//!   while dialing), one connection replaces the other by the tie-break, and
//!   frames queued on or in flight over the replaced one are dropped with it
//!   (the pair never stops being connected). Order still holds: the
//!   replacing connection delivers nothing until the replaced one's task has
//!   ended, so no frame of the old one arrives after a frame of the new.
//!
//! # Backpressure (lanes)
//! Delivery never holds up the connection's reader: Raft, RPC, heartbeats,
//! links and monitors share the connection with user messages, and a
//! process that does not read must not stall them.
//! - A message for a full mailbox is parked in that process's own queue,
//!   which a task drains in arrival order as the mailbox makes room; later
//!   messages for that process queue behind it.
//! - Its first parked message from a peer sends that peer `Pause` for the
//!   pid; when the queue is empty again, every paused peer gets `Resume`.
//!   While paused, a sender's [`Cluster::send`] to that pid is `Full` and
//!   [`Cluster::send_wait`] waits (the backpressure a sending process
//!   feels, per destination process; sends to others go on). A pause ends
//!   with the peer's `Resume` or with the connection.
//! - Frames already in flight when the pause arrives are parked too, up to
//!   [`PARKED_PER_PROCESS_MAX`] messages per process and
//!   [`PARKED_BYTES_MAX`] payload bytes per node. Past either, a message is
//!   **dropped**, logged and counted ([`Cluster::dropped_messages`]): the
//!   last resort, which the pause keeps senders by pid from reaching
//!   (a sender by name, [`Cluster::send_named`], is not paused: the name is
//!   resolved on the receiving node).
//!
//! # Links and monitors
//! `Ctx::link`/`monitor` on a remote pid go through `Dist` (this module's
//! [`foundation::dist::Distribution`]); each node keeps the relations with
//! each peer (`Relations`) so that, when the peer goes
//! down, local processes linked to its processes get an exit signal and
//! monitors fire `Down`, both with `ExitReason::NoConnection`.

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use foundation::context::{Context, with_global_context, with_global_context_sync};
use foundation::dist::Distribution;
use foundation::{ExitReason, Message, MonitorRef, Node, NodeId, Pid, SendError};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::mesh::{Cluster, Inner, Wire};
use crate::outbox::{Out, Outbox, PushError};

/// Frames about remote processes.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum ProcWire {
    /// A message for `to`; the payload is the message.
    Send {
        to: Pid,
        tag: u64,
        /// The sender's context as W3C headers.
        ctx: WireContext,
    },
    /// A message for the process registered as `name`.
    SendNamed {
        name: String,
        tag: u64,
        ctx: WireContext,
    },
    Link {
        from: Pid,
        to: Pid,
    },
    Unlink {
        from: Pid,
        to: Pid,
    },
    Exit {
        from: Pid,
        to: Pid,
        reason: ExitReason,
        link: bool,
    },
    Monitor {
        watcher: Pid,
        target: Pid,
        monitor: MonitorRef,
    },
    Demonitor {
        watcher: Pid,
        target: Pid,
        monitor: MonitorRef,
    },
    Down {
        watcher: Pid,
        monitor: MonitorRef,
        target: Pid,
        reason: ExitReason,
    },
    /// `to`'s mailbox is full: hold messages for it until `Resume`.
    Pause {
        to: Pid,
    },
    /// Messages for `to` may flow again.
    Resume {
        to: Pid,
    },
}

/// A context on the wire: its W3C headers (`traceparent`, `baggage`).
pub(crate) type WireContext = Option<Vec<(String, String)>>;

/// The current context, as carried by a frame.
pub(crate) fn wire_context() -> WireContext {
    foundation::context::current().map(|c| c.to_headers().to_vec())
}

/// A context from a frame (a bad one is logged and dropped).
pub(crate) fn read_context(inner: &Inner, peer: &str, ctx: WireContext) -> Option<Context> {
    let headers = ctx?;
    Context::from_headers(&headers)
        .inspect_err(|e| tracing::warn!(node = %inner.config.name, %peer, error = %e, "frame with a bad context: carried on without it"))
        .ok()
}

/// Why a remote send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteSendError {
    /// The pid's node is not connected.
    #[error("no connection to the node of {0}")]
    NoConnection(Pid),
    /// The node named is not connected.
    #[error("no connection to node {0}")]
    NoNode(String),
    /// The queue towards that node is full (try again, or use `send_wait`).
    #[error("the send queue to that node is full")]
    Full,
    /// The message is larger than a frame may be.
    #[error("message frame of {len} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The frame's size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The message did not encode.
    #[error("cannot encode the message: {0}")]
    Encode(String),
    /// A local target refused it (no such process, full mailbox, wrong type...).
    #[error("local delivery failed: {0}")]
    Local(String),
}

impl RemoteSendError {
    fn from_push(e: PushError, to: Pid) -> Self {
        match e {
            PushError::Full => Self::Full,
            PushError::Closed => Self::NoConnection(to),
            PushError::TooLarge { len, limit } => Self::TooLarge { len, limit },
            PushError::Encode(e) => Self::Encode(e),
        }
    }
}

/// The 64-bit tag of a message type on the wire (FNV-1a of its type name).
pub fn type_tag<M: 'static>() -> u64 {
    std::any::type_name::<M>().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

type Waiting = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Decodes a payload and delivers it to a local pid (when `try_now`);
/// returns a future when the mailbox is full (or `try_now` is false) and
/// delivery must wait.
type Decoder = fn(&Node, Pid, Bytes, bool) -> Result<Option<Waiting>, String>;

/// Messages parked for one local process whose mailbox is full; past this,
/// messages for it are dropped.
pub const PARKED_PER_PROCESS_MAX: usize = 4096;
/// Payload bytes parked for all of a node's processes; past this, messages
/// that would be parked are dropped.
pub const PARKED_BYTES_MAX: usize = 64 << 20;

fn decode<M: Message + DeserializeOwned>(payload: Bytes) -> Result<M, String> {
    if TypeId::of::<M>() == TypeId::of::<Bytes>() {
        let any: Box<dyn Any> = Box::new(payload);
        return Ok(*any.downcast::<M>().expect("M is Bytes"));
    }
    postcard::from_bytes(&payload).map_err(|e| format!("message does not decode as {}: {e}", std::any::type_name::<M>()))
}

fn deliver_typed<M: Message + DeserializeOwned>(node: &Node, to: Pid, payload: Bytes, try_now: bool) -> Result<Option<Waiting>, String> {
    let msg = decode::<M>(payload)?;
    let tried = if try_now { node.try_send(to, msg) } else { Err(SendError::Full(msg)) };
    match tried {
        Ok(()) => Ok(None),
        Err(SendError::Full(msg)) => {
            let node = node.clone();
            Ok(Some(Box::pin(async move {
                if let Err(e) = node.send(to, msg).await {
                    tracing::debug!(%to, error = %e, "remote message not delivered");
                }
            })))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Encodes `msg` into a frame for `outbox`.
fn frame_for<M: Message + Serialize>(outbox: &Outbox, header: &Wire, msg: &M) -> Result<Out, PushError> {
    if let Some(b) = (msg as &dyn Any).downcast_ref::<Bytes>() {
        return outbox.encode(header, None::<&()>, b.clone());
    }
    outbox.encode(header, Some(msg), Bytes::new())
}

/// Per-node bookkeeping of remote relations and message decoders.
#[derive(Default)]
pub(crate) struct Relations {
    decoders: parking_lot::RwLock<BTreeMap<u64, Decoder>>,
    by_peer: Mutex<BTreeMap<u32, PeerRelations>>,
    control_waiting: AtomicUsize,
    parked: Arc<Mutex<Parked>>,
    dropped: AtomicU64,
    /// Remote pids whose node asked this one to hold messages for them.
    paused: Mutex<BTreeMap<Pid, Arc<tokio::sync::Notify>>>,
}

/// Messages waiting for room in local mailboxes, per process (see the
/// module docs: bounded, drained in order by one task per process).
#[derive(Default)]
struct Parked {
    by_pid: BTreeMap<Pid, ParkedQueue>,
    bytes: usize,
}

#[derive(Default)]
struct ParkedQueue {
    messages: VecDeque<(Waiting, usize)>,
    /// Peers told to pause sending to this process.
    paused: BTreeSet<String>,
}

/// What this node's processes hold with one peer's processes.
#[derive(Default)]
struct PeerRelations {
    /// (local, remote) links, whichever side made them.
    links: BTreeSet<(Pid, Pid)>,
    /// Monitors held by local processes on remote ones: ref → (watcher, target).
    watching: BTreeMap<MonitorRef, (Pid, Pid)>,
    /// Monitors held by remote processes on local ones: ref → local target.
    watched: BTreeMap<MonitorRef, Pid>,
}

impl Relations {
    fn with(&self, remote: Pid, f: impl FnOnce(&mut PeerRelations)) {
        let mut by_peer = self.by_peer.lock();
        let hash = remote.node().name_hash;
        let rel = by_peer.entry(hash).or_default();
        f(rel);
        if rel.links.is_empty() && rel.watching.is_empty() && rel.watched.is_empty() {
            by_peer.remove(&hash);
        }
    }
}

/// The [`Distribution`] a cluster installs on its node.
pub(crate) struct Dist(pub Weak<Inner>);

impl Distribution for Dist {
    fn link(&self, local: Pid, remote: Pid) -> bool {
        let Some(inner) = self.0.upgrade() else { return false };
        // Recorded before the frame goes, so a peer going down meanwhile
        // still finds it (and fires `NoConnection`); taken back on failure.
        inner.procs.with(remote, |r| {
            r.links.insert((local, remote));
        });
        let sent = control(&inner, remote, ProcWire::Link { from: local, to: remote });
        if !sent {
            inner.procs.with(remote, |r| {
                r.links.remove(&(local, remote));
            });
        }
        sent
    }

    fn unlink(&self, local: Pid, remote: Pid) {
        let Some(inner) = self.0.upgrade() else { return };
        inner.procs.with(remote, |r| {
            r.links.remove(&(local, remote));
        });
        control(&inner, remote, ProcWire::Unlink { from: local, to: remote });
    }

    fn monitor(&self, watcher: Pid, target: Pid, monitor: MonitorRef) -> bool {
        let Some(inner) = self.0.upgrade() else { return false };
        inner.procs.with(target, |r| {
            r.watching.insert(monitor, (watcher, target));
        });
        let sent = control(&inner, target, ProcWire::Monitor { watcher, target, monitor });
        if !sent {
            inner.procs.with(target, |r| {
                r.watching.remove(&monitor);
            });
        }
        sent
    }

    fn demonitor(&self, watcher: Pid, target: Pid, monitor: MonitorRef) {
        let Some(inner) = self.0.upgrade() else { return };
        inner.procs.with(target, |r| {
            r.watching.remove(&monitor);
        });
        control(&inner, target, ProcWire::Demonitor { watcher, target, monitor });
    }

    fn exit_signal(&self, from: Pid, to: Pid, reason: ExitReason, link: bool) {
        let Some(inner) = self.0.upgrade() else { return };
        if link {
            inner.procs.with(to, |r| {
                r.links.remove(&(from, to));
            });
        }
        control(&inner, to, ProcWire::Exit { from, to, reason, link });
    }

    fn down(&self, watcher: Pid, monitor: MonitorRef, target: Pid, reason: ExitReason) {
        let Some(inner) = self.0.upgrade() else { return };
        inner.procs.with(watcher, |r| {
            r.watched.remove(&monitor);
        });
        control(&inner, watcher, ProcWire::Down { watcher, monitor, target, reason });
    }
}

/// Control frames (links, monitors, signals) cannot wait: they come from
/// exits and synchronous calls. If the queue is full, a task waits for room;
/// at most [`CONTROL_WAITING_MAX`] such tasks per node, past which the
/// connection is cut (the peer then sees this node down and every relation
/// fires `NoConnection`: a signal is delivered, or its loss is visible).
fn control(inner: &Arc<Inner>, remote: Pid, wire: ProcWire) -> bool {
    let Some(outbox) = inner.route(remote.node().name_hash) else { return false };
    control_on(inner, remote.node().name_hash, outbox, wire)
}

/// [`control`] on the outbox towards the peer whose pids carry `peer_hash`.
fn control_on(inner: &Arc<Inner>, peer_hash: u32, outbox: Outbox, wire: ProcWire) -> bool {
    match outbox.try_send_or_keep(Out::header(&Wire::Proc(wire))) {
        Ok(()) => true,
        Err((PushError::Full, out)) => {
            let waiting = &inner.procs.control_waiting;
            if waiting.fetch_add(1, Ordering::AcqRel) >= CONTROL_WAITING_MAX {
                waiting.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(node = %inner.config.name, peer_hash, "send queue full of waiting control frames: cutting the connection");
                crate::mesh::cut(inner, peer_hash);
                return false;
            }
            let inner = inner.clone();
            foundation::rt::spawn(async move {
                let _ = outbox.send(out).await;
                inner.procs.control_waiting.fetch_sub(1, Ordering::AcqRel);
            });
            true
        }
        Err(_) => false,
    }
}

/// Control frames waiting for room, per node, before the connection is cut.
pub const CONTROL_WAITING_MAX: usize = 4096;

/// Applies a frame from `peer`. Never waits (see the module docs).
pub(crate) fn on_frame(inner: &Arc<Inner>, peer: &str, wire: ProcWire, payload: Bytes) {
    let node = &inner.node;
    match wire {
        ProcWire::Send { to, tag, ctx } => deliver(inner, peer, to, tag, ctx, payload),
        ProcWire::SendNamed { name, tag, ctx } => match node.whereis(&name) {
            Some(to) => deliver(inner, peer, to, tag, ctx, payload),
            None => tracing::debug!(node = %inner.config.name, %peer, %name, "message for an unregistered name dropped"),
        },
        ProcWire::Link { from, to } => {
            if node.is_local(to) && node.remote_link(to, from) {
                inner.procs.with(from, |r| {
                    r.links.insert((to, from));
                });
            } else {
                control(inner, from, ProcWire::Exit { from: to, to: from, reason: ExitReason::NoProc, link: true });
            }
        }
        ProcWire::Unlink { from, to } => {
            inner.procs.with(from, |r| {
                r.links.remove(&(to, from));
            });
            node.remote_unlink(to, from);
        }
        ProcWire::Exit { from, to, reason, link } => {
            if link {
                inner.procs.with(from, |r| {
                    r.links.remove(&(to, from));
                });
            }
            node.remote_exit(from, to, reason, link);
        }
        ProcWire::Monitor { watcher, target, monitor } => {
            if node.is_local(target) && node.remote_monitor(target, watcher, monitor) {
                inner.procs.with(watcher, |r| {
                    r.watched.insert(monitor, target);
                });
            } else {
                control(inner, watcher, ProcWire::Down { watcher, monitor, target, reason: ExitReason::NoProc });
            }
        }
        ProcWire::Demonitor { watcher, target, monitor } => {
            inner.procs.with(watcher, |r| {
                r.watched.remove(&monitor);
            });
            node.remote_demonitor(target, monitor);
        }
        ProcWire::Down { watcher, monitor, target, reason } => {
            inner.procs.with(target, |r| {
                r.watching.remove(&monitor);
            });
            node.remote_down(watcher, monitor, target, reason);
        }
        ProcWire::Pause { to } => {
            inner.procs.paused.lock().entry(to).or_default();
        }
        ProcWire::Resume { to } => {
            if let Some(n) = inner.procs.paused.lock().remove(&to) {
                n.notify_waiters();
            }
        }
    }
}

fn deliver(inner: &Arc<Inner>, peer: &str, to: Pid, tag: u64, ctx: WireContext, payload: Bytes) {
    let Some(decoder) = inner.procs.decoders.read().get(&tag).copied() else {
        tracing::warn!(node = %inner.config.name, %peer, %to, tag, "message of a type this node has not registered: dropped");
        return;
    };
    if !inner.node.is_local(to) {
        tracing::debug!(node = %inner.config.name, %peer, %to, "message for a pid of another incarnation: dropped");
        return;
    }
    let len = payload.len();
    // A process with parked messages gets new ones behind them (order).
    let try_now = !inner.procs.parked.lock().by_pid.contains_key(&to);
    // The message is queued inside its context, so it travels on with it.
    let delivered = match read_context(inner, peer, ctx) {
        Some(ctx) => with_global_context_sync(ctx.clone(), || decoder(&inner.node, to, payload, try_now))
            .map(|w| w.map(|w| Box::pin(with_global_context(ctx, w)) as Waiting)),
        None => decoder(&inner.node, to, payload, try_now),
    };
    match delivered {
        Ok(None) => {}
        Ok(Some(waiting)) => park(inner, peer, to, waiting, len),
        Err(e) => tracing::debug!(node = %inner.config.name, %peer, %to, error = %e, "remote message not delivered"),
    }
}

/// Queues a message for a full mailbox behind the ones already waiting for
/// it (starting the task that drains them), or drops it past the bounds.
fn park(inner: &Arc<Inner>, peer: &str, to: Pid, waiting: Waiting, len: usize) {
    let procs = &inner.procs;
    let (start, pause) = {
        let mut parked = procs.parked.lock();
        let queued = parked.by_pid.get(&to).map_or(0, |q| q.messages.len());
        if queued >= PARKED_PER_PROCESS_MAX || parked.bytes + len > PARKED_BYTES_MAX {
            drop(parked);
            let dropped = procs.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(node = %inner.config.name, %peer, %to, queued, dropped, "mailbox full and its parked queue at its bound: remote message dropped");
            return;
        }
        parked.bytes += len;
        let start = !parked.by_pid.contains_key(&to);
        let queue = parked.by_pid.entry(to).or_default();
        queue.messages.push_back((waiting, len));
        (start, queue.paused.insert(peer.to_owned()))
    };
    if pause && let Some(outbox) = inner.route_to(peer) {
        control_on(inner, NodeId::new(peer, 0).name_hash, outbox, ProcWire::Pause { to });
    }
    if start {
        foundation::rt::spawn(drain_parked(Arc::downgrade(inner), procs.parked.clone(), to));
    }
}

/// Delivers `to`'s parked messages in order, waiting for room each time.
/// Its entry stays while it runs (so new messages queue behind), and goes
/// when the queue is empty.
async fn drain_parked(inner: Weak<Inner>, parked: Arc<Mutex<Parked>>, to: Pid) {
    loop {
        let next = {
            let mut p = parked.lock();
            let popped = p.by_pid.get_mut(&to).and_then(|q| q.messages.pop_front());
            match popped {
                Some(next) => next,
                None => {
                    let paused = p.by_pid.remove(&to).map(|q| q.paused).unwrap_or_default();
                    drop(p);
                    resume(inner, to, paused);
                    return;
                }
            }
        };
        let (waiting, len) = next;
        waiting.await;
        let mut p = parked.lock();
        debug_assert!(p.bytes >= len, "parked bytes: {} counted, {len} delivered", p.bytes);
        p.bytes -= len;
    }
}

/// Tells the peers paused for `to` that messages may flow again.
fn resume(inner: Weak<Inner>, to: Pid, paused: BTreeSet<String>) {
    let Some(inner) = inner.upgrade() else { return };
    for peer in paused {
        if let Some(outbox) = inner.route_to(&peer) {
            control_on(&inner, NodeId::new(&peer, 0).name_hash, outbox, ProcWire::Resume { to });
        }
    }
}

/// The peer whose pids carry `name_hash` is gone: every local process linked
/// to one of its processes gets an exit signal, and every monitor on one
/// fires, with `NoConnection`; monitors its processes held here are dropped.
pub(crate) fn peer_down(inner: &Inner, name_hash: u32) {
    // Pauses asked by that peer end with its connection.
    let resumed: Vec<Arc<tokio::sync::Notify>> = {
        let mut paused = inner.procs.paused.lock();
        let pids: Vec<Pid> = paused.keys().filter(|p| p.node().name_hash == name_hash).copied().collect();
        pids.iter().filter_map(|p| paused.remove(p)).collect()
    };
    for n in resumed {
        n.notify_waiters();
    }
    let Some(rel) = inner.procs.by_peer.lock().remove(&name_hash) else { return };
    let node = &inner.node;
    for (target, monitor) in rel.watched.into_iter().map(|(m, t)| (t, m)) {
        node.remote_demonitor(target, monitor);
    }
    for (local, remote) in rel.links {
        node.remote_exit(remote, local, ExitReason::NoConnection, true);
    }
    for (monitor, (watcher, target)) in rel.watching {
        node.remote_down(watcher, monitor, target, ExitReason::NoConnection);
    }
}

impl Cluster {
    /// Lets processes of this node whose mailbox takes `M` receive `M` from
    /// other nodes. (A frame of an unregistered type is dropped and logged.)
    pub fn register_message<M: Message + DeserializeOwned>(&self) {
        self.inner().procs.decoders.write().insert(type_tag::<M>(), deliver_typed::<M>);
    }

    /// Remote messages this node dropped because their local process's
    /// mailbox and parked queue were full (see the module docs).
    pub fn dropped_messages(&self) -> u64 {
        self.inner().procs.dropped.load(Ordering::Relaxed)
    }

    /// Sends `msg` to `to`, local or remote, without waiting: a full queue
    /// towards its node is `Full`. Remote delivery is asynchronous (like
    /// Erlang's `!`): `Ok` means queued in order, not received.
    pub fn send<M: Message + Serialize>(&self, to: Pid, msg: M) -> Result<(), RemoteSendError> {
        let inner = self.inner();
        if inner.node.is_local(to) {
            return inner.node.try_send(to, msg).map_err(|e| RemoteSendError::Local(e.to_string()));
        }
        let outbox = inner.route(to.node().name_hash).ok_or(RemoteSendError::NoConnection(to))?;
        if inner.procs.paused.lock().contains_key(&to) {
            return Err(RemoteSendError::Full);
        }
        let out = frame_for(&outbox, &Wire::Proc(ProcWire::Send { to, tag: type_tag::<M>(), ctx: wire_context() }), &msg)
            .map_err(|e| RemoteSendError::from_push(e, to))?;
        outbox.try_send(out).map_err(|e| RemoteSendError::from_push(e, to))
    }

    /// Sends `msg` to `to`, waiting for room in the queue towards its node
    /// (or in a local mailbox): the backpressure a sending process feels.
    pub async fn send_wait<M: Message + Serialize>(&self, to: Pid, msg: M) -> Result<(), RemoteSendError> {
        let inner = self.inner();
        if inner.node.is_local(to) {
            return inner.node.send(to, msg).await.map_err(|e| RemoteSendError::Local(e.to_string()));
        }
        self.wait_unpaused(to).await;
        let outbox = inner.route(to.node().name_hash).ok_or(RemoteSendError::NoConnection(to))?;
        let out = frame_for(&outbox, &Wire::Proc(ProcWire::Send { to, tag: type_tag::<M>(), ctx: wire_context() }), &msg)
            .map_err(|e| RemoteSendError::from_push(e, to))?;
        outbox.send(out).await.map_err(|e| RemoteSendError::from_push(e, to))
    }

    /// Waits while `to`'s node has paused messages for it (its `Resume`, or
    /// the connection's end, lets this go).
    async fn wait_unpaused(&self, to: Pid) {
        loop {
            let resumed = {
                let paused = self.inner().procs.paused.lock();
                let Some(n) = paused.get(&to) else { return };
                let n = n.clone();
                drop(paused);
                n
            };
            let notified = resumed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Looked at again once enabled: a resume in between is not lost.
            if !self.inner().procs.paused.lock().get(&to).is_some_and(|n| Arc::ptr_eq(n, &resumed)) {
                continue;
            }
            notified.await;
        }
    }

    /// Sends `msg` to the process registered as `name` on node `node`
    /// (this node included), waiting for room in the queue. A name that is
    /// not registered there drops the message (as Erlang's `{name, node} !`).
    pub async fn send_named<M: Message + Serialize>(&self, node: &str, name: &str, msg: M) -> Result<(), RemoteSendError> {
        let inner = self.inner();
        if node == inner.config.name {
            let to = inner.node.whereis(name).ok_or_else(|| RemoteSendError::Local(format!("no process registered as {name}")))?;
            return inner.node.send(to, msg).await.map_err(|e| RemoteSendError::Local(e.to_string()));
        }
        let outbox = inner.route_to(node).ok_or_else(|| RemoteSendError::NoNode(node.to_owned()))?;
        let header = Wire::Proc(ProcWire::SendNamed { name: name.to_owned(), tag: type_tag::<M>(), ctx: wire_context() });
        let push_err = |e| match e {
            PushError::Closed => RemoteSendError::NoNode(node.to_owned()),
            PushError::Full => RemoteSendError::Full,
            PushError::TooLarge { len, limit } => RemoteSendError::TooLarge { len, limit },
            PushError::Encode(e) => RemoteSendError::Encode(e),
        };
        let out = frame_for(&outbox, &header, &msg).map_err(push_err)?;
        outbox.send(out).await.map_err(push_err)
    }
}
