//! Lanes: the credit windows of senders by pid, the credit a receiving
//! node owes, and the messages parked for full local mailboxes (see the
//! parent module's "Backpressure (lanes)").

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use foundation::Pid;
use parking_lot::Mutex;

use super::{ProcWire, Waiting, control_on};
use crate::mesh::Inner;

/// Messages a node may have sent to one remote process and not had
/// credited back (see the module docs).
pub const WINDOW_MESSAGES: u32 = 4096;
/// Payload bytes likewise; a larger message goes alone.
pub const WINDOW_BYTES: u64 = 4 << 20;
/// A receiving node credits a sender back once this many of its messages
/// to one process are out of its hands...
pub const CREDIT_EVERY: u32 = 512;
/// ...or this many payload bytes.
pub const CREDIT_BYTES: u64 = 512 << 10;
/// Credits owed to (peer, process) pairs below the thresholds; past this,
/// all are sent (so the table of what is owed stays bounded).
const OWED_MAX: usize = 4096;
/// Messages parked for one local process whose mailbox is full (sixteen
/// senders' windows); past this, messages for it are dropped.
pub const PARKED_PER_PROCESS_MAX: usize = 16 * WINDOW_MESSAGES as usize;
/// Bytes parked for all of a node's processes, payload and
/// [`PARKED_OVERHEAD`] each; past this, messages that would be parked are
/// dropped.
pub const PARKED_BYTES_MAX: usize = 64 << 20;
/// What a parked message costs beside its payload: its boxed delivery (216
/// bytes for a `u64` message) and its queue slot.
pub const PARKED_OVERHEAD: usize = 256;

/// A remote pid's window, as its sender sees it.
#[derive(Default)]
struct Flow {
    messages: u32,
    bytes: u64,
    /// Woken when credit comes back (or the connection ends).
    room: Option<Arc<tokio::sync::Notify>>,
}

/// The credit tables' hasher: looked up on every remote message, where
/// SipHash (std's) was 5 % of `remote.one_way`'s time. Seeded at random per
/// table, as std's is, since a peer chooses the pids it sends to.
type Seeded = foldhash::quality::RandomState;

/// Credit owed to one sender for one local process.
#[derive(Default, Clone, Copy)]
struct Owed {
    messages: u32,
    bytes: u64,
}

/// Messages waiting for room in local mailboxes, per process (see the
/// module docs: bounded, drained in order by one task per process).
#[derive(Default)]
pub(super) struct Parked {
    pub(super) by_pid: BTreeMap<Pid, ParkedQueue>,
    bytes: usize,
}

#[derive(Default)]
pub(super) struct ParkedQueue {
    /// Each message, its payload bytes, and the sender's node to credit
    /// once delivered (none for a message sent by name).
    messages: VecDeque<(Waiting, usize, Option<u32>)>,
}

/// A node's lanes: what it has in flight to remote processes, what it
/// owes its peers, and what waits for local mailboxes.
#[derive(Default)]
pub(super) struct Lanes {
    pub(super) parked: Arc<Mutex<Parked>>,
    pub(super) dropped: AtomicU64,
    /// Sender side: what this node has sent to each remote pid and not had
    /// credited back.
    flow: Mutex<HashMap<Pid, Flow, Seeded>>,
    /// Receiver side: credit owed to each (peer's name hash, local pid).
    owed: Mutex<HashMap<(u32, Pid), Owed, Seeded>>,
}

impl Lanes {
    /// Takes room in `to`'s window for a message of `len` payload bytes;
    /// when there is none, what wakes a waiter once there may be.
    pub(super) fn take_window(&self, to: Pid, len: u64) -> Result<(), Arc<tokio::sync::Notify>> {
        let mut flow = self.flow.lock();
        let f = flow.entry(to).or_default();
        if f.messages == 0 || (f.messages < WINDOW_MESSAGES && f.bytes + len <= WINDOW_BYTES) {
            f.messages += 1;
            f.bytes += len;
            return Ok(());
        }
        Err(f.room.get_or_insert_with(Default::default).clone())
    }

    /// Gives room back to `to`'s window: credit from its node, or a
    /// message that was never queued.
    pub(super) fn give_window(&self, to: Pid, messages: u32, bytes: u64) {
        let room = {
            let mut flow = self.flow.lock();
            let Some(f) = flow.get_mut(&to) else { return };
            f.messages = f.messages.saturating_sub(messages);
            f.bytes = f.bytes.saturating_sub(bytes);
            if f.messages == 0 { flow.remove(&to).and_then(|f| f.room) } else { f.room.take() }
        };
        if let Some(room) = room {
            room.notify_waiters();
        }
    }

    /// Whether `room` is still the waker of `to`'s window (no credit came
    /// since it was taken).
    pub(super) fn still_full(&self, to: Pid, room: &Arc<tokio::sync::Notify>) -> bool {
        self.flow.lock().get(&to).and_then(|f| f.room.as_ref()).is_some_and(|r| Arc::ptr_eq(r, room))
    }
}

/// Counts a message for `to` from the node whose name hash is `peer` (if it
/// came within a window) as out of this node's hands, and sends that node
/// its credit once enough is owed.
pub(super) fn credit(inner: &Arc<Inner>, peer: Option<u32>, to: Pid, len: usize) {
    let Some(peer) = peer else { return };
    let due: Vec<((u32, Pid), Owed)> = {
        let mut owed = inner.procs.lanes.owed.lock();
        let o = owed.entry((peer, to)).or_default();
        o.messages += 1;
        o.bytes += len as u64;
        if o.messages >= CREDIT_EVERY || o.bytes >= CREDIT_BYTES {
            let o = *o;
            owed.remove(&(peer, to));
            vec![((peer, to), o)]
        } else if owed.len() > OWED_MAX {
            owed.drain().collect()
        } else {
            Vec::new()
        }
    };
    for ((peer, to), o) in due {
        if let Some(outbox) = inner.route(peer) {
            control_on(inner, peer, outbox, ProcWire::Credit { to, messages: o.messages, bytes: o.bytes });
        }
    }
}

/// Queues a message for a full mailbox behind the ones already waiting for
/// it (starting the task that drains them), or drops it past the bounds.
pub(super) fn park(inner: &Arc<Inner>, peer: &str, to: Pid, waiting: Waiting, len: usize, credit_to: Option<u32>) {
    let procs = &inner.procs;
    let start = {
        let mut parked = procs.lanes.parked.lock();
        let queued = parked.by_pid.get(&to).map_or(0, |q| q.messages.len());
        if queued >= PARKED_PER_PROCESS_MAX || parked.bytes + len + PARKED_OVERHEAD > PARKED_BYTES_MAX {
            drop(parked);
            let dropped = procs.lanes.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(node = %inner.config.name, %peer, %to, queued, dropped, "mailbox full and its parked queue at its bound: remote message dropped");
            credit(inner, credit_to, to, len);
            return;
        }
        parked.bytes += len + PARKED_OVERHEAD;
        let start = !parked.by_pid.contains_key(&to);
        parked.by_pid.entry(to).or_default().messages.push_back((waiting, len, credit_to));
        start
    };
    if start {
        inner.node.rt().spawn(drain_parked(Arc::downgrade(inner), procs.lanes.parked.clone(), to));
    }
}

/// Delivers `to`'s parked messages in order, waiting for room each time,
/// and credits their senders. Its entry stays while it runs (so new
/// messages queue behind), and goes when the queue is empty.
async fn drain_parked(inner: Weak<Inner>, parked: Arc<Mutex<Parked>>, to: Pid) {
    loop {
        let next = {
            let mut p = parked.lock();
            let popped = p.by_pid.get_mut(&to).and_then(|q| q.messages.pop_front());
            match popped {
                Some(next) => next,
                None => {
                    p.by_pid.remove(&to);
                    return;
                }
            }
        };
        let (waiting, len, credit_to) = next;
        waiting.await;
        {
            let mut p = parked.lock();
            debug_assert!(p.bytes >= len + PARKED_OVERHEAD, "parked bytes: {} counted, {len} delivered", p.bytes);
            p.bytes -= len + PARKED_OVERHEAD;
        }
        if let Some(inner) = inner.upgrade() {
            credit(&inner, credit_to, to, len);
        }
    }
}

/// The connection to the peer whose pids carry `name_hash` ended, or was
/// replaced: what was in flight on it is lost with it, so the windows
/// towards its processes open again, and credit owed to it is void. (On a
/// replacement, frames of the old connection still read afterwards are
/// credited too: a window may open by up to one window more, once.)
pub(crate) fn reset_windows(inner: &Inner, name_hash: u32) {
    let rooms: Vec<Arc<tokio::sync::Notify>> = {
        let mut flow = inner.procs.lanes.flow.lock();
        let pids: Vec<Pid> = flow.keys().filter(|p| p.node().name_hash == name_hash).copied().collect();
        pids.iter().filter_map(|p| flow.remove(p)).filter_map(|f| f.room).collect()
    };
    for room in rooms {
        room.notify_waiters();
    }
    inner.procs.lanes.owed.lock().retain(|(peer, _), _| *peer != name_hash);
}
