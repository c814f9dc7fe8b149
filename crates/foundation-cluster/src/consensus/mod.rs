//! Consensus: a Raft group (openraft 0.10) replicating a key/value state
//! machine, behind Foundation's own API.
//!
//! - [`Consensus::start`] runs a member on a node of the cluster mesh; Raft's
//!   RPCs travel as cluster RPCs ([`network`]). [`Consensus::initialize`]
//!   forms the group once, from one member (the seed's `start_cluster`).
//! - [`Consensus::reach_consensus`] commits a [`Command`] and returns its
//!   [`Decision`] (`committed`, `term`, `index`). From any member: a
//!   follower forwards to the leader; while a new leader is not yet
//!   confirmed by a quorum (`ForwardToLeader` without a leader) it retries.
//!   A node that cannot see a quorum refuses at once with
//!   [`ConsensusError::NoQuorum`]. A write whose outcome is not known when
//!   the timeout ends (it may still commit) is [`ConsensusError::Unknown`],
//!   never a failure.
//! - [`Consensus::get`] is a linearizable read (ReadIndex on the leader).
//! - [`Consensus::add_member`] / [`Consensus::remove_member`] change the
//!   voters through openraft's joint consensus.
//! - [`Consensus::status`] is the seed's `cluster_status`.
//!
//! Storage ([`store`]) is durable in a data directory (redb) or in memory;
//! tests inject storage faults through [`DiskFaults`] ([`disk_faults`]).

pub mod coordination;
pub mod disk_faults;
mod incarnation;
pub mod network;
pub mod observe;
pub mod runtime;
mod status;
pub mod store;
pub mod types;
pub mod watch;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, Raft, ReadPolicy, ServerState};
use serde::{Deserialize, Serialize};

pub use self::disk_faults::{DiskError, DiskFaults};
use self::incarnation::Incarnation;
pub use self::incarnation::{FRESH_PEER_WAIT, member_key};
pub use self::status::{ClusterStatus, LogProgress};
pub use self::store::{MemoryDisk, Storage};
use self::store::{StateMachine, StorageHealth};
pub use self::types::{Answer, Applied, Command, LockState, Member, NodeId, Query, State, TypeConfig};
use crate::mesh::{Cluster, WeakCluster};

/// Largest proposal (key plus values), by default.
pub const PROPOSAL_BYTES_DEFAULT: usize = 1 << 20;
/// Room an entry needs beyond its command in an append.
const ENTRY_MARGIN: usize = 1024;
/// Log entries between snapshots.
pub const SNAPSHOT_EVERY: u64 = 100_000;
/// Pause between retries while no leader is known.
const RETRY: Duration = Duration::from_millis(10);

/// How a member runs.
#[derive(Clone, Debug)]
pub struct ConsensusConfig {
    /// This member's id: unique in the group, never reused.
    pub id: NodeId,
    /// Election timeout range (a random value in it per election).
    pub election_timeout: (Duration, Duration),
    /// Heartbeat interval of the leader.
    pub heartbeat: Duration,
    /// Where the log, vote and snapshots live.
    pub storage: Storage,
    /// Largest proposal accepted (at most half the mesh's frame limit, so
    /// that one entry always fits in an append).
    pub max_proposal_bytes: usize,
    /// Storage faults injected by a test (none by default).
    pub disk_faults: DiskFaults,
    /// A snapshot is taken after this many entries...
    pub snapshot_every: u64,
    /// ...or after entries of this many bytes, whichever comes first; the
    /// log before it is then purged, but for the last `logs_kept` entries.
    pub snapshot_log_bytes: u64,
    /// Entries kept behind a snapshot, so that a follower just behind
    /// catches up from the log rather than the whole snapshot.
    pub logs_kept: u64,
    /// The cluster's name, stored in the Raft database with the member's
    /// id: a database of another cluster or member is refused.
    pub cluster_id: String,
    /// This member has run before on its storage (its data directory says
    /// so): an empty Raft database is then refused, as a member that lost
    /// its data must never vote again under its old id.
    pub existing: bool,
    /// The group's other nodes (name, mesh address), dialed before a
    /// member whose store is empty asks whether its id ran before: a node
    /// whose data directory was emptied must find somebody to refuse it.
    pub peers: Vec<(String, String)>,
    /// Where the member reports its leaders and terms, snapshots and
    /// followers' lag (the node's Telemetry service; none by default).
    pub telemetry: Option<crate::services::Telemetry>,
}

/// Log entries kept behind a snapshot, by default.
pub const LOGS_KEPT: u64 = 1000;
/// Bytes of applied entries between snapshots, by default.
pub const SNAPSHOT_LOG_BYTES: u64 = 64 << 20;
/// The key prefix of the group's records of its voters (one key per
/// member id that has voted with a leader known; see
/// [`incarnation::member_key`]): a member whose store was emptied is
/// refused by any member that applied its record.
pub const MEMBERS_PREFIX: &str = "consensus.members/";

impl ConsensusConfig {
    /// Defaults: election timeout 100–200 ms, heartbeat 40 ms, in memory.
    ///
    /// A follower keeps its leader's lease for the election timeout's upper
    /// bound after the last heartbeat and refuses other candidates meanwhile,
    /// so a crashed leader is replaced after about that bound plus a
    /// candidate's timeout.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            election_timeout: (Duration::from_millis(100), Duration::from_millis(200)),
            heartbeat: Duration::from_millis(40),
            storage: Storage::Memory,
            max_proposal_bytes: PROPOSAL_BYTES_DEFAULT,
            disk_faults: DiskFaults::new(),
            snapshot_every: SNAPSHOT_EVERY,
            snapshot_log_bytes: SNAPSHOT_LOG_BYTES,
            logs_kept: LOGS_KEPT,
            cluster_id: "foundation".into(),
            existing: false,
            peers: Vec::new(),
            telemetry: None,
        }
    }

    /// A LAN profile for a failover under 100 ms: election timeout
    /// 25–50 ms, heartbeat 8 ms (more heartbeat traffic; a loaded machine
    /// may see needless elections).
    pub fn lan(mut self) -> Self {
        self.election_timeout = (Duration::from_millis(25), Duration::from_millis(50));
        self.heartbeat = Duration::from_millis(8);
        self
    }

    /// Durable storage in `dir`.
    pub fn durable(mut self, dir: impl Into<PathBuf>) -> Self {
        self.storage = Storage::Dir(dir.into());
        self
    }
}

/// The RPC a client calls on any member to propose a command:
/// `(Command, Duration) -> Result<Decision, ConsensusError>`.
pub const CLIENT_SUBMIT: &str = "consensus.submit";
/// The RPC a client calls on any member for a linearizable query:
/// `(Query, Duration) -> Result<Answer, ConsensusError>`.
pub const CLIENT_QUERY: &str = "consensus.query";

/// The RPC that reads a member's applied index and state as applied there
/// (not linearizable: for comparing replicas):
/// `() -> Result<(Option<u64>, State), ConsensusError>`.
pub const CLIENT_LOCAL_STATE: &str = "consensus.local_state";

/// The outcome of a committed proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Always true: a proposal that is not committed is an error.
    pub committed: bool,
    /// The term of the leader that committed it.
    pub term: u64,
    /// Its index in the log.
    pub index: u64,
    /// What applying it did.
    pub applied: Applied,
}

/// Why a consensus operation did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ConsensusError {
    /// This node cannot see a quorum of voters: nothing was proposed.
    #[error("no quorum: this node sees {reachable} of {voters} voters")]
    NoQuorum {
        /// Voters this node reaches (itself included).
        reachable: usize,
        /// Voters in the group.
        voters: usize,
    },
    /// No leader was found before the timeout: nothing was proposed.
    #[error("no leader within {0:?}")]
    NoLeader(Duration),
    /// The outcome is unknown: the proposal may have been, or may still be,
    /// committed. Retrying needs the proposal to be idempotent.
    #[error("outcome unknown after {0:?}: the proposal may still commit")]
    Unknown(Duration),
    /// The proposal is over the size limit.
    #[error("proposal of {len} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// This member is not the leader (internal: callers retry elsewhere).
    #[error("not the leader")]
    NotLeader,
    /// The group was already initialized.
    #[error("already initialized")]
    AlreadyInitialized,
    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// Storage failed (or a data directory is corrupt).
    #[error("storage: {0}")]
    Storage(String),
    /// The Raft member stopped, or is misconfigured.
    #[error("raft: {0}")]
    Raft(String),
}

/// A member of the Raft group. Cheap to clone.
#[derive(Clone)]
pub struct Consensus {
    inner: Arc<Inner>,
}

struct Inner {
    /// The Raft member and state machine on the storage as last opened
    /// (replaced when the storage is reopened after a failure).
    current: parking_lot::RwLock<Incarnation>,
    /// Whether the storage failed (and why), until it is reopened.
    health: StorageHealth,
    /// Applied key changes, across reopenings.
    changes: tokio::sync::broadcast::Sender<String>,
    /// Set by `shutdown`: the storage watch stops reopening.
    stopping: std::sync::atomic::AtomicBool,
    cluster: WeakCluster,
    /// The node's runtime seam: where this member's tasks are spawned.
    rt: foundation::rt::Rt,
    name: String,
    config: ConsensusConfig,
}

fn raft_err(e: impl std::fmt::Display) -> ConsensusError {
    ConsensusError::Raft(e.to_string())
}

impl Consensus {
    /// The Raft member as now (a handle: cheap to clone).
    fn raft(&self) -> Raft<TypeConfig, StateMachine> {
        self.inner.current.read().raft.clone()
    }

    /// The node's runtime seam, where this member's tasks run.
    pub(crate) fn rt(&self) -> &foundation::rt::Rt {
        &self.inner.rt
    }

    /// The state machine as now.
    fn sm(&self) -> StateMachine {
        self.inner.current.read().sm.clone()
    }

    /// Why this member's storage failed, while it has not reopened it: it
    /// then neither votes nor acknowledges, and answers every proposal and
    /// read with [`ConsensusError::Storage`].
    pub fn storage_failure(&self) -> Option<String> {
        self.inner.health.failure()
    }

    /// Starts this node's member (recovering its log and state from its data
    /// directory, if any) and serves Raft's RPCs on `cluster`.
    pub async fn start(cluster: &Cluster, mut config: ConsensusConfig) -> Result<Self, ConsensusError> {
        // One entry always fits in an append, whatever the frame limit.
        let entry_max = network::append_bytes_max(cluster.frame_limit()).saturating_sub(ENTRY_MARGIN);
        config.max_proposal_bytes = config.max_proposal_bytes.min(entry_max);
        let (changes, _) = tokio::sync::broadcast::channel(store::CHANGES_BUFFER);
        let health = StorageHealth::default();
        let first = incarnation::open(cluster, &config, &changes, &health).await?;
        let inner = Arc::new(Inner {
            current: parking_lot::RwLock::new(first),
            health,
            changes,
            stopping: std::sync::atomic::AtomicBool::new(false),
            cluster: cluster.downgrade(),
            rt: cluster.node().rt().clone(),
            name: cluster.name().to_owned(),
            config,
        });
        incarnation::serve(cluster, &inner);
        incarnation::snapshot_by_bytes(&inner);
        incarnation::watch_storage(&inner);
        incarnation::mark_member(&inner);
        observe::observe(&inner);
        Ok(Self { inner })
    }

    /// Forms the group with these members (once, from one member; the
    /// others learn it through Raft). The seed's `start_cluster`.
    pub async fn initialize(&self, members: BTreeMap<NodeId, Member>) -> Result<(), ConsensusError> {
        self.raft().initialize(members).await.map_err(|e| match e.api_error() {
            Some(openraft::error::InitializeError::NotAllowed(_)) => ConsensusError::AlreadyInitialized,
            _ => raft_err(e),
        })
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.inner.config.id
    }

    /// The leader, as this member knows it.
    pub fn leader(&self) -> Option<(NodeId, Member)> {
        let m = self.raft().metrics().borrow_watched().clone();
        let id = m.current_leader?;
        let member = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, member))
    }

    /// Whether this member is the leader now.
    pub fn is_leader(&self) -> bool {
        self.raft().metrics().borrow_watched().state == ServerState::Leader
    }

    /// The replicated state as applied here (not linearizable: for
    /// comparing replicas; use [`Consensus::query`] to read).
    pub async fn local_state(&self) -> State {
        self.sm().dump().await
    }

    /// Keys changed by commands applied here from now on (a bounded
    /// broadcast: a watcher that falls behind skips ahead and is told).
    #[must_use = "changes are delivered only to a receiver that is kept"]
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.changes.subscribe()
    }

    /// A key's value as applied here (not linearizable; for watchers;
    /// `None` too while this member's state cannot be read).
    pub async fn local_get(&self, key: &str) -> Option<Vec<u8>> {
        self.local_read(key).await.ok().flatten()
    }

    /// A key's value as applied here, or why this member's state cannot
    /// be read now (closed while its storage is reopened, a read error).
    pub async fn local_read(&self, key: &str) -> Result<Option<Vec<u8>>, ConsensusError> {
        match self.sm().query(&Query::Get(key.to_owned())).await {
            Ok(Answer::Value(v)) => Ok(v),
            Ok(other) => Err(ConsensusError::Storage(format!("unexpected answer to a read: {other:?}"))),
            Err(e) => Err(ConsensusError::Storage(e.to_string())),
        }
    }

    /// The last applied log index here.
    pub async fn applied_index(&self) -> Option<u64> {
        self.sm().applied_index().await
    }

    /// Takes a snapshot of what is applied here now (the log behind it is
    /// then purged, keeping `logs_kept` entries) and waits until it is
    /// taken.
    pub async fn snapshot(&self) -> Result<(), ConsensusError> {
        let applied = self.applied_index().await;
        let raft = self.raft().clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // openraft drops a trigger that comes while a snapshot is being
            // built: it is sent again each second until a snapshot holds
            // what was applied (one trigger timed out after 30 s in two of
            // five `bench --only disk.` runs, just after a snapshot of its
            // own and the purge behind it).
            raft.trigger().snapshot().await.map_err(raft_err)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = raft.wait(Some(left.min(Duration::from_secs(1))));
            match wait.metrics(|m| m.snapshot.map(|s| s.index) >= applied, "a snapshot of what was applied").await {
                Ok(_) => return Ok(()),
                Err(openraft::metrics::WaitError::Timeout(..)) if tokio::time::Instant::now() < deadline => {}
                Err(e) => return Err(raft_err(e)),
            }
        }
    }

    /// Reads `key` linearizably, waiting at most `timeout`.
    pub async fn get(&self, key: &str, timeout: Duration) -> Result<Option<Vec<u8>>, ConsensusError> {
        match self.query(Query::Get(key.to_owned()), timeout).await? {
            Answer::Value(v) => Ok(v),
            other => Err(raft_err(format!("unexpected answer {other:?}"))),
        }
    }

    /// Answers `query` linearizably (ReadIndex on the leader; forwarded
    /// there from a follower), waiting at most `timeout`.
    pub async fn query(&self, query: Query, timeout: Duration) -> Result<Answer, ConsensusError> {
        #[cfg(feature = "bug-stale-reads")]
        return {
            let _ = timeout;
            self.sm().query(&query).await.map_err(|e| ConsensusError::Storage(e.to_string()))
        };
        #[allow(unreachable_code)]
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let quorum = self.require_quorum()?;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ConsensusError::NoLeader(timeout));
            }
            if !quorum {
                tokio::time::sleep(RETRY.min(remaining)).await;
                continue;
            }
            let attempt = match self.leader() {
                Some((id, _)) if id == self.id() => self.read_here(&query, remaining).await,
                Some((_, leader)) => {
                    let Some(cluster) = self.inner.cluster.upgrade() else { return Err(raft_err("this node has shut down")) };
                    cluster
                        .rpc::<(Query, Duration), Result<Answer, ConsensusError>>(
                            &leader.name,
                            "consensus.read",
                            (query.clone(), remaining),
                            remaining,
                        )
                        .await
                        .unwrap_or(Err(ConsensusError::NotLeader))
                }
                None => Err(ConsensusError::NotLeader),
            };
            match attempt {
                Err(ConsensusError::NotLeader) => tokio::time::sleep(RETRY.min(remaining)).await,
                other => return other,
            }
        }
    }

    async fn read_here(&self, query: &Query, timeout: Duration) -> Result<Answer, ConsensusError> {
        match tokio::time::timeout(timeout, self.raft().ensure_linearizable(ReadPolicy::ReadIndex)).await {
            Err(_) => Err(ConsensusError::NoLeader(timeout)),
            Ok(Ok(_)) => self.sm().query(query).await.map_err(|e| ConsensusError::Storage(e.to_string())),
            Ok(Err(e)) if e.forward_to_leader().is_some() => Err(ConsensusError::NotLeader),
            Ok(Err(e)) => Err(raft_err(e)),
        }
    }

    /// Adds `member` as a voter: first as a learner that catches up, then
    /// through joint consensus. Call it on the leader (or it forwards).
    pub async fn add_member(&self, id: NodeId, member: Member, timeout: Duration) -> Result<(), ConsensusError> {
        let raft = &self.raft();
        let change = async {
            raft.add_learner(id, member, true).await.map_err(|e| ConsensusError::Membership(e.to_string()))?;
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| ConsensusError::Membership(e.to_string()))?;
            Ok(())
        };
        tokio::time::timeout(timeout, change).await.map_err(|_| ConsensusError::Unknown(timeout))?
    }

    /// Removes the voter `id` (through joint consensus); it stays a learner
    /// until it is shut down.
    pub async fn remove_member(&self, id: NodeId, timeout: Duration) -> Result<(), ConsensusError> {
        let raft = self.raft();
        let change = raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false);
        match tokio::time::timeout(timeout, change).await {
            Err(_) => Err(ConsensusError::Unknown(timeout)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ConsensusError::Membership(e.to_string())),
        }
    }

    /// The voters and their members.
    pub fn members(&self) -> BTreeMap<NodeId, Member> {
        let m = self.raft().metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        membership.voter_ids().filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone()))).collect()
    }

    /// Waits until this member knows a leader (at most `timeout`).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<(NodeId, Member), ConsensusError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ConsensusError::NoLeader(timeout));
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Stops this member: it leaves the group's traffic (its RPC handlers
    /// are removed) and its Raft tasks end. Durable state stays on disk.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, std::sync::atomic::Ordering::Release);
        if let Some(c) = self.inner.cluster.upgrade() {
            for name in HANDLERS {
                c.unregister_rpc(name);
            }
        }
        let _ = self.raft().shutdown().await;
        self.sm().close().await;
    }
}

const HANDLERS: [&str; 10] = [
    "raft.append",
    "raft.vote",
    "raft.pre_vote",
    "raft.snapshot_chunk",
    "consensus.write",
    "consensus.read",
    incarnation::REPLICATED_RPC,
    CLIENT_SUBMIT,
    CLIENT_QUERY,
    CLIENT_LOCAL_STATE,
];
