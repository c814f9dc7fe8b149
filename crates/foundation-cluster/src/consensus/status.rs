//! What a member reports about the group and its log: the seed's
//! `cluster_status` ([`ClusterStatus`]) and where its log stands
//! ([`LogProgress`]), both read from Raft's metrics and the mesh.

use std::collections::{BTreeMap, BTreeSet};

use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::{Consensus, Member, NodeId};

/// The seed's `cluster_status`, as one member sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// A quorum is reachable and a leader is known and reachable: writes can
    /// commit.
    pub operational: bool,
    /// This member reaches a majority of the voters (itself included).
    pub quorum: bool,
    /// The leader's name, if known.
    pub leader: Option<String>,
    /// The current term.
    pub term: u64,
    /// The voters' names.
    pub members: Vec<String>,
    /// The voters this member reaches (itself included).
    pub reachable: Vec<String>,
    /// Why this member's storage failed, while it has not reopened it (it
    /// is then not operational). Always serialized: a status travels over
    /// the mesh in postcard, where a field left out misreads the rest.
    pub storage_error: Option<String>,
}

/// Where a member's log stands ([`Consensus::progress`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogProgress {
    /// Its last log entry's index.
    pub last_log: Option<u64>,
    /// The last entry it knows committed.
    pub committed: Option<u64>,
    /// The last entry it applied.
    pub applied: Option<u64>,
    /// The last entry in its snapshot.
    pub snapshot: Option<u64>,
    /// On the leader: each member's matched index (`None`: nothing yet).
    /// Empty elsewhere.
    pub matched: BTreeMap<String, Option<u64>>,
}

impl Consensus {
    /// The seed's `cluster_status`, as this member sees it: quorum from the
    /// mesh's live connections, leader and term from Raft.
    pub fn status(&self) -> ClusterStatus {
        let metrics = self.raft().metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeMap<NodeId, Member> =
            membership.voter_ids().filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone()))).collect();
        let peers: BTreeSet<String> = self.inner.cluster.upgrade().map(|c| c.peers().into_iter().collect()).unwrap_or_default();
        let me = &self.inner.name;
        let reachable: Vec<String> = voters.values().filter(|m| m.name == *me || peers.contains(&m.name)).map(|m| m.name.clone()).collect();
        let quorum = !voters.is_empty() && reachable.len() > voters.len() / 2;
        let leader = metrics.current_leader.and_then(|id| voters.get(&id).or_else(|| membership.get_node(&id)).map(|m| m.name.clone()));
        let leader_reachable = leader.as_ref().is_some_and(|l| l == me || peers.contains(l));
        let storage_error = self.storage_failure();
        ClusterStatus {
            operational: quorum && leader_reachable && storage_error.is_none(),
            storage_error,
            quorum,
            leader,
            term: metrics.current_term,
            members: voters.values().map(|m| m.name.clone()).collect(),
            reachable,
        }
    }

    /// Where this member's log stands (from Raft's metrics): its last
    /// entry, what it knows committed and has applied, its snapshot, and,
    /// on the leader, the index each member has matched.
    pub fn progress(&self) -> LogProgress {
        let m = self.raft().metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let name = |id: &NodeId| membership.get_node(id).map_or_else(|| id.to_string(), |n| n.name.clone());
        LogProgress {
            last_log: m.last_log_index,
            committed: m.local_committed.map(|l| l.index),
            applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            matched: m.replication.iter().flatten().map(|(id, l)| (name(id), l.map(|l| l.index))).collect(),
        }
    }
}
