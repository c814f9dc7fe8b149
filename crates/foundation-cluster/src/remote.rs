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
//! - When both nodes of a pair dial each other at once (a re-join, or a
//!   peer learned through a third node while dialing), one connection
//!   replaces the other by the tie-break. The replaced one is handed over,
//!   not cut: each side sends what it had queued on it, closes its half,
//!   and delivers what arrives until the other side's close, and the
//!   replacing connection delivers nothing before that, so nothing is lost
//!   and order holds. (A handover the peer does not finish within
//!   `mesh::HANDOVER_MAX` ends the old connection, losing what was still
//!   on it, without a `Down`: the pair never stopped being connected.)
//!
//! # Backpressure (lanes)
//! Delivery never holds up the connection's reader: Raft, RPC, heartbeats,
//! links and monitors share the connection with user messages, and a
//! process that does not read must not stall them.
//! - A message for a full mailbox is parked in that process's own queue,
//!   which a task drains in arrival order as the mailbox makes room; later
//!   messages for that process queue behind it.
//! - Senders by pid work within a window: a node may have at most
//!   [`WINDOW_MESSAGES`] messages and [`WINDOW_BYTES`] payload bytes (a
//!   larger message goes alone) sent to one remote process and not yet
//!   credited back. The receiving node credits them back (`Credit`, one
//!   frame per [`CREDIT_EVERY`] messages or [`CREDIT_BYTES`] bytes) once
//!   they are out of its hands: in the mailbox, or dropped. Past the
//!   window, [`Cluster::send`] to that pid is `Full` and
//!   [`Cluster::send_wait`] waits (the backpressure a sending process
//!   feels, per destination process; sends to others go on). The window
//!   opens again with the credit, or with the connection's end.
//! - So what one peer has parked for one process is at most a window, not
//!   whatever the socket buffers held (a pause sent when the mailbox filled
//!   came too late: 300,000 small messages sent with `send_wait` lost
//!   20,045 that were already on their way). Parked messages are bounded
//!   again per process ([`PARKED_PER_PROCESS_MAX`]: sixteen peers'
//!   windows) and per node ([`PARKED_BYTES_MAX`], counting each message's
//!   bookkeeping, [`PARKED_OVERHEAD`], beside its payload). Past either, a
//!   message is **dropped**, logged and counted
//!   ([`Cluster::dropped_messages`]): the last resort, for more than
//!   sixteen peers flooding one process, a node's parked memory at its
//!   bound, or senders by name ([`Cluster::send_named`]: no window, the
//!   name is resolved on the receiving node).
//!
//! # Links and monitors
//! `Ctx::link`/`monitor` on a remote pid go through `Dist` (this module's
//! [`foundation::dist::Distribution`]); each node keeps the relations with
//! each peer (`Relations`) so that, when the peer goes
//! down, local processes linked to its processes get an exit signal and
//! monitors fire `Down`, both with `ExitReason::NoConnection`.

mod lanes;

pub(crate) use lanes::reset_windows;
pub use lanes::{CREDIT_BYTES, CREDIT_EVERY, PARKED_BYTES_MAX, PARKED_OVERHEAD, PARKED_PER_PROCESS_MAX, WINDOW_BYTES, WINDOW_MESSAGES};
use lanes::{credit, park};

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// `messages` of the receiver's messages to `to` (`bytes` payload
    /// bytes) are out of this node's hands: the sender's window for `to`
    /// opens by that much.
    Credit {
        to: Pid,
        messages: u32,
        bytes: u64,
    },
}

/// A context on the wire: its W3C headers (`traceparent`, `baggage`).
pub(crate) type WireContext = Option<Vec<(String, String)>>;

/// The current context, as carried by a frame.
pub(crate) fn wire_context() -> WireContext {
    foundation::context::current().map(|c| c.to_headers().to_vec())
}

/// The context a remote send carries: with spans recorded, a `send` span's
/// (ended as the frame is made: the send is asynchronous).
fn send_context<M>(inner: &Inner) -> WireContext {
    let current = foundation::context::current()?;
    let name = || format!("send {}", crate::admin::observer::short_type(std::any::type_name::<M>()));
    let ctx =
        crate::traces::under(inner, &current, name, opentelemetry::trace::SpanKind::Producer).map_or(current, |s| s.context().clone());
    Some(ctx.to_headers().to_vec())
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
    /// Credit windows and parked messages (see `lanes`).
    lanes: lanes::Lanes,
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
fn control_on(inner: &Arc<Inner>, peer_hash: u32, outbox: Arc<Outbox>, wire: ProcWire) -> bool {
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
            let rt = inner.node.rt().clone();
            let inner = inner.clone();
            rt.spawn(async move {
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
        ProcWire::Send { to, tag, ctx } => deliver(inner, peer, to, tag, ctx, payload, true),
        ProcWire::SendNamed { name, tag, ctx } => match node.whereis(&name) {
            Some(to) => deliver(inner, peer, to, tag, ctx, payload, false),
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
        ProcWire::Credit { to, messages, bytes } => inner.procs.lanes.give_window(to, messages, bytes),
    }
}

/// Delivers a message from `peer` to local `to`, now or parked behind what
/// waits for its mailbox. `credited`: the sender sent it within `to`'s
/// window (by pid), so this node credits it back once it is out of hand.
fn deliver(inner: &Arc<Inner>, peer: &str, to: Pid, tag: u64, ctx: WireContext, payload: Bytes, credited: bool) {
    let len = payload.len();
    let credit_to = credited.then(|| NodeId::new(peer, 0).name_hash);
    let Some(decoder) = inner.procs.decoders.read().get(&tag).copied() else {
        tracing::warn!(node = %inner.config.name, %peer, %to, tag, "message of a type this node has not registered: dropped");
        credit(inner, credit_to, to, len);
        return;
    };
    if !inner.node.is_local(to) {
        tracing::debug!(node = %inner.config.name, %peer, %to, "message for a pid of another incarnation: dropped");
        credit(inner, credit_to, to, len);
        return;
    }
    // A process with parked messages gets new ones behind them (order).
    let try_now = !inner.procs.lanes.parked.lock().by_pid.contains_key(&to);
    // The message is queued inside its context, so it travels on with it.
    let delivered = match read_context(inner, peer, ctx) {
        Some(ctx) => {
            let ctx = match crate::traces::under(inner, &ctx, || "receive".to_owned(), opentelemetry::trace::SpanKind::Consumer) {
                Some(mut received) => {
                    received.set("messaging.source", peer.to_owned());
                    received.context().clone()
                }
                None => ctx,
            };
            with_global_context_sync(ctx.clone(), || decoder(&inner.node, to, payload, try_now))
                .map(|w| w.map(|w| Box::pin(with_global_context(ctx, w)) as Waiting))
        }
        None => decoder(&inner.node, to, payload, try_now),
    };
    match delivered {
        Ok(None) => credit(inner, credit_to, to, len),
        Ok(Some(waiting)) => park(inner, peer, to, waiting, len, credit_to),
        Err(e) => {
            tracing::debug!(node = %inner.config.name, %peer, %to, error = %e, "remote message not delivered");
            credit(inner, credit_to, to, len);
        }
    }
}

/// The peer whose pids carry `name_hash` is gone: every local process linked
/// to one of its processes gets an exit signal, and every monitor on one
/// fires, with `NoConnection`; monitors its processes held here are dropped.
pub(crate) fn peer_down(inner: &Inner, name_hash: u32) {
    reset_windows(inner, name_hash);
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
        self.inner().procs.lanes.dropped.load(Ordering::Relaxed)
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
        let out = frame_for(&outbox, &Wire::Proc(ProcWire::Send { to, tag: type_tag::<M>(), ctx: send_context::<M>(inner) }), &msg)
            .map_err(|e| RemoteSendError::from_push(e, to))?;
        let len = out.payload_len() as u64;
        if inner.procs.lanes.take_window(to, len).is_err() {
            return Err(RemoteSendError::Full);
        }
        outbox.try_send(out).map_err(|e| {
            inner.procs.lanes.give_window(to, 1, len);
            RemoteSendError::from_push(e, to)
        })
    }

    /// Sends `msg` to `to`, waiting for room in its window and in the queue
    /// towards its node (or in a local mailbox): the backpressure a sending
    /// process feels.
    pub async fn send_wait<M: Message + Serialize>(&self, to: Pid, msg: M) -> Result<(), RemoteSendError> {
        let inner = self.inner();
        if inner.node.is_local(to) {
            return inner.node.send(to, msg).await.map_err(|e| RemoteSendError::Local(e.to_string()));
        }
        let outbox = inner.route(to.node().name_hash).ok_or(RemoteSendError::NoConnection(to))?;
        let out = frame_for(&outbox, &Wire::Proc(ProcWire::Send { to, tag: type_tag::<M>(), ctx: send_context::<M>(inner) }), &msg)
            .map_err(|e| RemoteSendError::from_push(e, to))?;
        let len = out.payload_len() as u64;
        self.wait_window(to, len).await;
        // The connection may have been replaced, or lost, while this
        // waited: the frame goes on the one there is now.
        let Some(outbox) = inner.route(to.node().name_hash) else {
            inner.procs.lanes.give_window(to, 1, len);
            return Err(RemoteSendError::NoConnection(to));
        };
        outbox.send(out).await.map_err(|e| {
            inner.procs.lanes.give_window(to, 1, len);
            RemoteSendError::from_push(e, to)
        })
    }

    /// Takes room in `to`'s window for `len` payload bytes, waiting for
    /// credit (or the connection's end) while there is none.
    async fn wait_window(&self, to: Pid, len: u64) {
        let procs = &self.inner().procs;
        loop {
            let room = match procs.lanes.take_window(to, len) {
                Ok(()) => return,
                Err(room) => room,
            };
            let credited = room.notified();
            tokio::pin!(credited);
            credited.as_mut().enable();
            // Looked at again once enabled: credit in between is not lost.
            if procs.lanes.still_full(to, &room) {
                credited.await;
            }
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
        let header = Wire::Proc(ProcWire::SendNamed { name: name.to_owned(), tag: type_tag::<M>(), ctx: send_context::<M>(inner) });
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
