//! Faults: what a test (or the chaos monkey) can do to a cluster, the
//! typed refusals of impossible ones, and the record of what was applied.

use serde::Serialize;

use super::{Backend, DiskError};

/// A fault to inject (or undo). Node indexes are 0-based.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Cut the network between groups (nodes in no group form one more).
    Partition {
        /// The sides.
        groups: Vec<Vec<usize>>,
    },
    /// Cut these links (both directions), leaving the others.
    Cut {
        /// Node pairs.
        pairs: Vec<(usize, usize)>,
    },
    /// Drop what `from` sends to `to` (not the other way).
    PartitionOneway {
        /// Senders.
        from: Vec<usize>,
        /// Receivers.
        to: Vec<usize>,
    },
    /// Repair every partition, clog and link setting.
    Heal,
    /// Stop a node abruptly (its durable state stays).
    Kill {
        /// The node.
        node: usize,
    },
    /// Start a killed node again on its durable state.
    Restart {
        /// The node.
        node: usize,
    },
    /// Freeze a node's traffic (in and out) until resumed.
    Pause {
        /// The node.
        node: usize,
    },
    /// Let a paused node's traffic flow again.
    Resume {
        /// The node.
        node: usize,
    },
    /// Hold the traffic between two nodes (delivered at unclog).
    Clog {
        /// One end.
        a: usize,
        /// The other.
        b: usize,
    },
    /// Release a clog.
    Unclog {
        /// One end.
        a: usize,
        /// The other.
        b: usize,
    },
    /// Skews a node's wall clock ([`foundation::rt::Rt::set_clock_offset`],
    /// through its chaos agent): lock leases are judged by the proposer's
    /// clock. 0 puts it right; a restart puts it right too (a new node, a
    /// new clock).
    ClockSkew {
        /// The node.
        node: usize,
        /// Milliseconds ahead (negative: behind).
        offset_ms: i64,
    },
    /// Latency and loss on the link between two nodes (both directions).
    /// Loss breaks connections (as on turmoil: TCP does not retransmit
    /// there), which the mesh re-dials.
    SetLink {
        /// One end.
        a: usize,
        /// The other.
        b: usize,
        /// Added one-way latency, in milliseconds.
        latency_ms: u64,
        /// Probability in [0, 1] that a transfer breaks its connection.
        loss: f64,
    },
    /// Caps the bandwidth between two nodes, each direction, at
    /// `bytes_per_sec` (0: no cap), paced write by write: a link of a
    /// few MiB/s, where a large append takes longer than a heartbeat. Not
    /// in simulation (turmoil models latency and loss, not bandwidth).
    Throttle {
        /// One end.
        a: usize,
        /// The other.
        b: usize,
        /// Bytes a second each way (0: no cap).
        bytes_per_sec: u64,
    },
    /// Every write batch of a node's consensus store fails with `error`
    /// from now on (`None`: writes succeed again). Through
    /// [`ClusterSpec::disk_faults`](super::ClusterSpec::disk_faults): simulated and in-process backends.
    DiskError {
        /// The node.
        node: usize,
        /// ENOSPC or EIO, or none.
        error: Option<DiskError>,
    },
    /// Every write batch of a node's consensus store takes this much longer
    /// (0: no more); in simulation half a batch is written before the wait,
    /// so a kill meanwhile leaves a torn tail. Simulated and in-process
    /// backends.
    DiskLatency {
        /// The node.
        node: usize,
        /// Added per batch, in milliseconds.
        latency_ms: u64,
    },
    /// A killed node's data is gone when it restarts: its data directory
    /// (or, simulated, its disk) is emptied.
    WipeDisk {
        /// The node (killed).
        node: usize,
    },
    /// A killed node's log loses its last `entries` entries, as a disk
    /// that lost writes it had acknowledged would (simulated backend only).
    TruncateLog {
        /// The node (killed).
        node: usize,
        /// Entries dropped from the end.
        entries: u64,
    },
}

impl Fault {
    pub(super) fn nodes(&self) -> Vec<usize> {
        match self {
            Self::Partition { groups } => groups.iter().flatten().copied().collect(),
            Self::Cut { pairs } => pairs.iter().flat_map(|(a, b)| [*a, *b]).collect(),
            Self::PartitionOneway { from, to } => from.iter().chain(to).copied().collect(),
            Self::Heal => Vec::new(),
            Self::Kill { node }
            | Self::Restart { node }
            | Self::Pause { node }
            | Self::Resume { node }
            | Self::ClockSkew { node, .. }
            | Self::DiskError { node, .. }
            | Self::DiskLatency { node, .. }
            | Self::WipeDisk { node }
            | Self::TruncateLog { node, .. } => vec![*node],
            Self::Clog { a, b } | Self::Unclog { a, b } | Self::SetLink { a, b, .. } | Self::Throttle { a, b, .. } => vec![*a, *b],
        }
    }
}

impl Fault {
    /// The nodes (of `n`) this fault may leave out of a leader's reach: a
    /// leader's registry releases the names held by a voter it has not
    /// reached for a while, so a name can go once its node is cut off,
    /// stopped or slowed. Repairs, clock skews and disk losses (which
    /// follow a kill) cut nobody off.
    pub fn cut_off(&self, n: usize) -> Vec<usize> {
        match self {
            Self::Partition { .. } => (0..n).collect(),
            Self::Cut { .. }
            | Self::PartitionOneway { .. }
            | Self::Kill { .. }
            | Self::Pause { .. }
            | Self::Clog { .. }
            | Self::SetLink { .. }
            | Self::Throttle { .. }
            | Self::DiskError { error: Some(_), .. } => self.nodes(),
            Self::DiskLatency { latency_ms, .. } if *latency_ms > 0 => self.nodes(),
            _ => Vec::new(),
        }
    }
}

/// Why a fault could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    /// There is no node with that index.
    #[error("no node {0} (the cluster has {1})")]
    NoSuchNode(usize, usize),
    /// The node is not in the state the fault needs (e.g. restarting a
    /// running node).
    #[error("node {node}: {why}")]
    State {
        /// The node.
        node: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A loss probability outside [0, 1].
    #[error("loss {0} is not a probability")]
    BadLoss(f64),
    /// The backend failed to apply it.
    #[error("{0}")]
    Backend(String),
    /// This backend cannot apply this kind of fault.
    #[error("the {backend} backend cannot apply {fault}: {why}")]
    Unsupported {
        /// The fault's kind.
        fault: &'static str,
        /// The backend.
        backend: Backend,
        /// Why, and where it can be applied.
        why: &'static str,
    },
}

/// One applied fault, with when (microseconds since the cluster started;
/// virtual under simulation).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultRecord {
    /// When it was applied.
    pub at_us: u64,
    /// What.
    #[serde(flatten)]
    pub fault: Fault,
}
