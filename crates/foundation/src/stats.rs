//! What a node counts about its processes and supervisors, and the rare
//! events it tells observers of (the cluster's Telemetry service turns
//! both into metrics and events).
//!
//! Nothing here touches the path of a message that finds room. A spawn is
//! counted by the process table's own insert counter; an exit adds one
//! relaxed increment to its reason's counter, beside the table removal it
//! already does; a send refused or made to wait, and a message a drop
//! policy drops, one more; supervisor restarts are rare.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::{ExitReason, Pid};

/// The exit reason kinds counted apart, in [`reason_kind`]'s order.
pub const EXIT_KINDS: [&str; 9] =
    ["normal", "shutdown", "killed", "noproc", "noconnection", "restart_intensity", "error", "panic", "signal_overflow"];

/// The kind of `reason` (an index into [`EXIT_KINDS`]): the message of an
/// error or panic is left out, so the set of labels stays bounded.
pub fn reason_kind(reason: &ExitReason) -> usize {
    match reason {
        ExitReason::Normal => 0,
        ExitReason::Shutdown => 1,
        ExitReason::Kill | ExitReason::Killed => 2,
        ExitReason::NoProc => 3,
        ExitReason::NoConnection => 4,
        ExitReason::RestartIntensity => 5,
        ExitReason::Error(_) => 6,
        ExitReason::Panic(_) => 7,
        ExitReason::SignalOverflow => 8,
    }
}

/// What a node has counted since it started ([`crate::Node::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Processes spawned.
    pub spawned: u64,
    /// Processes alive now.
    pub live: u64,
    /// Processes exited, by the kind of their reason ([`EXIT_KINDS`]; a
    /// kind with none is left out).
    pub exited: BTreeMap<&'static str, u64>,
    /// Children restarted by supervisors.
    pub restarts: u64,
    /// Supervisors that passed their restart intensity and stopped.
    pub intensity_reached: u64,
    /// Times a send found a mailbox full: a `try_send` refused, or a
    /// `send` that had to wait (each time it looked and found no room).
    pub mailbox_full: u64,
    /// Messages dropped by mailboxes' drop policies (the new message, or
    /// the old ones evicted).
    pub mailbox_dropped: u64,
}

/// A rare event of the framework, for the node's observers
/// ([`crate::Node::observe`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Observed {
    /// A supervisor restarted a child that exited.
    Restart {
        /// The supervisor.
        supervisor: Pid,
        /// The child's id in its spec.
        child: String,
        /// Why the child exited.
        reason: ExitReason,
        /// The child's restarts so far, this one included.
        restarts: u32,
    },
    /// A supervisor restarted more than `intensity` times within `period`
    /// and stops (its exit reason: `RestartIntensity`).
    IntensityReached {
        /// The supervisor.
        supervisor: Pid,
        /// Its limit.
        intensity: u32,
        /// Its window.
        period: Duration,
    },
}

/// Called with every [`Observed`] event, on the thread that saw it: it
/// must be quick and must not block.
pub type Observer = Arc<dyn Fn(&Observed) + Send + Sync>;

/// The counters a node keeps beside its process table.
#[derive(Default)]
pub(crate) struct Counters {
    exited: [AtomicU64; EXIT_KINDS.len()],
    restarts: AtomicU64,
    intensity_reached: AtomicU64,
    full: AtomicU64,
    dropped: AtomicU64,
    observers: RwLock<Vec<Observer>>,
}

impl Counters {
    pub fn exited(&self, reason: &ExitReason) {
        self.exited[reason_kind(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// A send found a mailbox full (off the path of a send that has room).
    pub fn full(&self) {
        self.full.fetch_add(1, Ordering::Relaxed);
    }

    /// A mailbox's policy dropped `n` messages.
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `event` and tells the observers.
    pub fn observed(&self, event: Observed) {
        match &event {
            Observed::Restart { .. } => self.restarts.fetch_add(1, Ordering::Relaxed),
            Observed::IntensityReached { .. } => self.intensity_reached.fetch_add(1, Ordering::Relaxed),
        };
        let observers = self.observers.read().clone();
        for o in observers {
            o(&event);
        }
    }

    pub fn observe(&self, observer: Observer) {
        self.observers.write().push(observer);
    }

    pub fn stats(&self, spawned: u64, live: u64) -> NodeStats {
        let exited = EXIT_KINDS.iter().zip(&self.exited).map(|(k, n)| (*k, n.load(Ordering::Relaxed))).filter(|(_, n)| *n > 0).collect();
        NodeStats {
            spawned,
            live,
            exited,
            restarts: self.restarts.load(Ordering::Relaxed),
            intensity_reached: self.intensity_reached.load(Ordering::Relaxed),
            mailbox_full: self.full.load(Ordering::Relaxed),
            mailbox_dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}
