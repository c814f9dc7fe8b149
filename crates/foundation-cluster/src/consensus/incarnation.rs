//! A member's Raft and state machine on its storage as opened, and what
//! replaces them when the storage fails.
//!
//! # A storage failure
//! When a write of the store fails (ENOSPC, EIO on fsync, any error), the
//! member stops acting as one at once: its Raft RPCs are refused (it
//! neither votes nor acknowledges), proposals and reads answer
//! [`ConsensusError::Storage`] (503 on the admin API), its status says
//! `operational: false` with the reason, and the error is logged. Nothing
//! written before the failure is trusted beyond what is durable: the
//! member's Raft is shut down and its storage closed; then, every
//! [`REOPEN_EVERY`], it opens the storage again, loading only what is
//! durable, and starts a new Raft on it. When that works, and its first
//! writes do, the member is back (logged); while the disk still fails, it
//! stays out. It recovers on its own: there is nothing to restart.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::Raft;
use openraft::async_runtime::WatchReceiver;
use openraft::vote::RaftLeaderId;

use super::network::{Network, SnapshotChunk, SnapshotReceiver};
use super::store::{self, OpenOptions, StateMachine, StorageHealth};
use super::types::{Command, Query, TypeConfig};
use super::{CLIENT_LOCAL_STATE, CLIENT_QUERY, CLIENT_SUBMIT, Consensus, ConsensusConfig, ConsensusError, Inner, raft_err, runtime};
use crate::mesh::Cluster;

/// The RPC that asks a member whether a member id has run in the group
/// before: `NodeId -> Option<String>` (why this member knows it did).
pub const REPLICATED_RPC: &str = "consensus.replicated";

/// How long a member with an empty store waits for each configured peer's
/// connection before it asks the connected ones (see [`refuse_if_ran_before`]).
pub const FRESH_PEER_WAIT: Duration = Duration::from_secs(1);

/// The key under which the group records that a member id has been a
/// voter that knew a leader ([`mark_member`]). The state machine keeps it
/// like any key, so every member that applied it knows, durably, whoever
/// leads.
pub fn member_key(id: super::NodeId) -> String {
    format!("{}{id}", super::MEMBERS_PREFIX)
}

/// A member with an empty store whose id has already run in the group has
/// lost its data (its data directory emptied): it must not vote again
/// under that id. Asks every connected peer; one that knows the id ran
/// refuses the start. A peer knows when it has taken the id's Raft answers
/// (recorded durably before the first one counted: `store::Participants`),
/// voted for it, leads and has replicated to it, or its state records the
/// id's [`member_key`]. (A member started while no peer that knows is
/// reachable is not caught: nobody can tell it.)
async fn refuse_if_ran_before(cluster: &Cluster, id: super::NodeId) -> Result<(), ConsensusError> {
    for peer in cluster.peers() {
        let answer: Result<Option<String>, _> = cluster.rpc(&peer, REPLICATED_RPC, id, Duration::from_secs(1)).await;
        if let Ok(Some(why)) = answer {
            return Err(ConsensusError::Storage(format!(
                "this member's Raft storage is empty, but {peer} {why}: it lost its data and must not vote again under id {id}; \
                 to rejoin, start it with an empty --data-dir and a new --id, and add that id to the group"
            )));
        }
    }
    Ok(())
}

/// Dials every peer not connected yet once, together, each for at most
/// [`FRESH_PEER_WAIT`] (one that is not up is skipped: the server keeps
/// dialing it).
async fn dial_once(cluster: &Cluster, peers: &[(String, String)]) {
    let connected = cluster.peers();
    let dials = peers.iter().filter(|(name, _)| !connected.contains(name)).map(|(name, addr)| async move {
        if let Ok(Err(e)) = tokio::time::timeout(FRESH_PEER_WAIT, cluster.connect_to(name, addr)).await {
            tracing::debug!(peer = %name, error = %e, "peer not reachable before the start");
        }
    });
    futures_util::future::join_all(dials).await;
}

/// What this member knows of `id` having run in the group: a leader's
/// matched index for it, or its record in the state.
async fn ran_before(inner: &Inner, id: super::NodeId) -> Option<String> {
    let metrics = inner.current.read().raft.metrics().borrow_watched().clone();
    if let Some(index) = metrics.replication.and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index) {
        return Some(format!("leads and had replicated entries up to {index} to member {id}"));
    }
    if inner.current.read().participants.contains(id) {
        return Some(format!("has taken Raft answers from member {id}"));
    }
    // Its vote (durable) went to `id` as a candidate or a leader.
    let voted = metrics.vote.leader_id();
    if *voted.node_id() == id {
        return Some(format!("voted for member {id} in term {}", voted.term()));
    }
    let sm = inner.current.read().sm.clone();
    match sm.query(&Query::Get(member_key(id))).await {
        Ok(super::Answer::Value(Some(_))) => Some(format!("has applied the record that member {id} voted in the group")),
        _ => None,
    }
}

/// Records, once per store, that this member is a voter of the group that
/// knows a leader ([`member_key`]): from then on an empty store under this
/// id is refused by any member that applied the record, not only by the
/// leader of the moment. Retries until it is there; ends with the member.
pub(super) fn mark_member(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let id = inner.config.id;
    inner.rt.spawn(async move {
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                foundation::rt::sleep(MARK_EVERY).await;
            }
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::Acquire) {
                return;
            }
            let me = Consensus { inner };
            if me.local_get(&member_key(id)).await.is_some() {
                return;
            }
            let metrics = me.raft().metrics().borrow_watched().clone();
            let voter = metrics.membership_config.membership().voter_ids().any(|v| v == id);
            if !voter || metrics.current_leader.is_none() {
                continue;
            }
            let cmd = Command::Put { key: member_key(id), value: me.inner.config.cluster_id.clone().into_bytes() };
            if let Err(e) = me.reach_consensus(cmd, MARK_EVERY * 40).await {
                tracing::debug!(error = %e, "the record of this member's vote is not committed yet");
            }
        }
    });
}

/// How often [`mark_member`] looks.
const MARK_EVERY: Duration = Duration::from_millis(50);

/// Pause between attempts to reopen a failed storage.
pub const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// A Raft member and its state machine, on storage opened once.
#[derive(Clone)]
pub(super) struct Incarnation {
    pub raft: Raft<TypeConfig, StateMachine>,
    pub sm: StateMachine,
    /// Whose answers this member took.
    pub participants: store::Participants,
}

/// Opens the storage and starts a Raft member on it.
pub(super) async fn open(
    cluster: &Cluster,
    config: &ConsensusConfig,
    changes: &tokio::sync::broadcast::Sender<String>,
    health: &StorageHealth,
) -> Result<Incarnation, ConsensusError> {
    let opts = OpenOptions {
        identity: store::StoreIdentity { cluster_id: config.cluster_id.clone(), id: config.id },
        existing: config.existing,
        faults: config.disk_faults.clone(),
        snapshot_log_bytes: config.snapshot_log_bytes,
        changes: changes.clone(),
        health: health.clone(),
        telemetry: config.telemetry.clone().map(|t| (t, cluster.name().to_owned())),
    };
    // A data directory is opened on the blocking pool (redb may repair a
    // file not closed cleanly); in memory there is nothing to wait for.
    let opened = match &config.storage {
        store::Storage::Dir(_) => {
            let storage = config.storage.clone();
            foundation::rt::spawn_blocking(move || store::open(&storage, &opts))
                .await
                .map_err(|e| ConsensusError::Storage(e.to_string()))?
        }
        storage => store::open(storage, &opts),
    };
    let (log, sm, fresh) = opened.map_err(|e| ConsensusError::Storage(e.to_string()))?;
    if fresh {
        dial_once(cluster, &config.peers).await;
        refuse_if_ran_before(cluster, config.id).await?;
    }
    let raft_config = openraft::Config {
        cluster_name: "foundation".into(),
        election_timeout_min: config.election_timeout.0.as_millis() as u64,
        election_timeout_max: config.election_timeout.1.as_millis() as u64,
        heartbeat_interval: config.heartbeat.as_millis() as u64,
        // A member the leader cannot reach is tried again every heartbeat
        // (the heartbeats go to it anyway). openraft's default backoff
        // doubles from 200 ms to 1 s: a member that came back after a while
        // waited up to a second before the leader sent it anything, about
        // 0.6 s of a 1 GiB catch-up (`consensus.snapshot_catchup`).
        backoff: {
            let every = config.heartbeat.as_millis().max(1);
            format!("{every}ms {every}ms {every}ms")
        },
        // As etcd: a snapshot every 100,000 entries (a snapshot copies the
        // whole state; taking one every 5,000 stalled the apply loop), or
        // sooner by bytes (see `StateMachine::snapshot_due`).
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        max_in_snapshot_log_to_keep: config.logs_kept,
        ..openraft::Config::default()
    }
    .validate()
    .map_err(raft_err)?;
    let participants = log.participants();
    let network = Network {
        cluster: cluster.downgrade(),
        me: config.id,
        frame_limit: cluster.frame_limit(),
        participants: participants.clone(),
        telemetry: config.telemetry.clone(),
    };
    // openraft's timers draw from the node's seeded RNG (see `runtime`).
    let seed = cluster.node().rt().with_rng(rand::Rng::random::<u64>) ^ config.id;
    let raft = runtime::scope(seed, Raft::new(config.id, Arc::new(raft_config), network, log, sm.clone())).await.map_err(raft_err)?;
    Ok(Incarnation { raft, sm, participants })
}

/// Watches the storage's health: on a failure, stops the member and
/// reopens its storage until that works (see the module's docs).
pub(super) fn watch_storage(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let health = inner.health.clone();
    inner.rt.spawn(async move {
        loop {
            let why = health.failed().await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::Acquire) {
                return;
            }
            tracing::error!(member = %inner.name, error = %why, "storage failed: this member stops voting and acknowledging until it has reopened its storage");
            let old = inner.current.read().clone();
            let _ = old.raft.shutdown().await;
            old.sm.close().await;
            drop(inner);
            let mut attempt = 0u64;
            loop {
                tokio::time::sleep(REOPEN_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.stopping.load(Ordering::Acquire) {
                    return;
                }
                let Some(cluster) = inner.cluster.upgrade() else { return };
                attempt += 1;
                inner.health.clear();
                match open(&cluster, &inner.config, &inner.changes, &inner.health).await {
                    Ok(next) => {
                        *inner.current.write() = next.clone();
                        snapshot_by_bytes(&inner);
                        match inner.health.failure() {
                            None => {
                                tracing::info!(member = %inner.name, attempt, "storage reopened: this member is back");
                                break;
                            }
                            Some(e) => {
                                tracing::warn!(member = %inner.name, attempt, error = %e, "the reopened storage failed again");
                                let _ = next.raft.shutdown().await;
                                next.sm.close().await;
                            }
                        }
                    }
                    Err(e) => {
                        inner.health.fail(e.to_string());
                        tracing::warn!(member = %inner.name, attempt, error = %e, "reopening the storage failed");
                    }
                }
            }
        }
    });
}

/// Takes a snapshot whenever the state machine says one is due by bytes
/// applied; ends with the member.
pub(super) fn snapshot_by_bytes(inner: &Arc<Inner>) {
    let mut due = inner.current.read().sm.snapshot_due();
    let weak = Arc::downgrade(inner);
    inner.rt.spawn(async move {
        while due.changed().await.is_ok() {
            let Some(inner) = weak.upgrade() else { return };
            let raft = inner.current.read().raft.clone();
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "a snapshot due by log bytes could not be triggered");
                return;
            }
        }
    });
}

/// Serves Raft's RPCs and the forwarded writes and reads.
pub(super) fn serve(cluster: &Cluster, inner: &Arc<Inner>) {
    // Raft's RPCs go to the member as it is when they arrive (it changes
    // when the storage is reopened); while the storage has failed they are
    // refused: the member neither votes nor acknowledges.
    fn member(weak: &Weak<Inner>) -> Result<Incarnation, String> {
        let inner = weak.upgrade().ok_or("this member stopped")?;
        if let Some(why) = inner.health.failure() {
            return Err(format!("this member's storage failed: {why}"));
        }
        Ok(inner.current.read().clone())
    }
    let current = |weak: &Weak<Inner>| -> Result<Raft<TypeConfig, StateMachine>, String> { Ok(member(weak)?.raft) };
    // A leader's appends and a candidate's vote request: the sender has run
    // (its own entries and vote count with what this member answers), so
    // it is recorded before the answer (see `store::Participants`).
    let weak = Arc::downgrade(inner);
    cluster.register_rpc("raft.append", move |req: openraft::raft::AppendEntriesRequest<TypeConfig>| {
        let member = member(&weak);
        async move {
            let member = member?;
            member.participants.record(*req.vote.leader_id().node_id()).await.map_err(|e| format!("could not record the leader: {e}"))?;
            member.raft.append_entries(req).await.map_err(|e| e.to_string())
        }
    });
    let weak = Arc::downgrade(inner);
    cluster.register_rpc("raft.vote", move |req: openraft::raft::VoteRequest<TypeConfig>| {
        let member = member(&weak);
        async move {
            let member = member?;
            member
                .participants
                .record(*req.vote.leader_id().node_id())
                .await
                .map_err(|e| format!("could not record the candidate: {e}"))?;
            member.raft.vote(req).await.map_err(|e| e.to_string())
        }
    });
    let weak = Arc::downgrade(inner);
    cluster.register_rpc("raft.pre_vote", move |req| {
        let raft = current(&weak);
        async move { raft?.pre_vote(req).await.map_err(|e| e.to_string()) }
    });
    let weak = Arc::downgrade(inner);
    let data_dir = match &inner.config.storage {
        store::Storage::Dir(d) => {
            Some((d.as_path(), store::StoreIdentity { cluster_id: inner.config.cluster_id.clone(), id: inner.config.id }))
        }
        _ => None,
    };
    let receiver = Arc::new(SnapshotReceiver::new(data_dir, inner.health.clone()));
    let report = (inner.config.telemetry.clone(), cluster.name().to_owned());
    cluster.register_rpc("raft.snapshot_chunk", move |chunk: SnapshotChunk| {
        let (raft, receiver, (telemetry, member)) = (current(&weak), receiver.clone(), report.clone());
        async move {
            let raft = raft?;
            match receiver.take(chunk).await? {
                None => Ok(None),
                Some((vote, snapshot, bytes)) => {
                    let index = snapshot.meta.last_log_id.as_ref().map(|l| l.index);
                    tracing::info!(index, bytes, "installing a snapshot from the leader");
                    let start = foundation::rt::Instant::now();
                    let installed = raft.install_full_snapshot(vote, snapshot).await.map(Some).map_err(|e| e.to_string());
                    match &installed {
                        Ok(_) => tracing::info!(index, bytes, "installed a snapshot from the leader"),
                        Err(e) => tracing::warn!(index, bytes, error = %e, "a snapshot from the leader was not installed"),
                    }
                    super::observe::emit(
                        &telemetry,
                        "foundation.consensus.snapshot_install",
                        &[("index", index.unwrap_or(0) as f64), ("bytes", bytes as f64), ("seconds", start.elapsed().as_secs_f64())],
                        &[("member", &member), ("outcome", if installed.is_ok() { "installed" } else { "failed" })],
                    );
                    installed
                }
            }
        }
    });
    let weak = Arc::downgrade(inner);
    cluster.register_rpc(REPLICATED_RPC, move |id: super::NodeId| {
        let inner = weak.upgrade();
        async move {
            match inner {
                Some(inner) => ran_before(&inner, id).await,
                None => None,
            }
        }
    });
    let weak = Arc::downgrade(inner);
    cluster.register_rpc("consensus.write", move |(command, timeout): (Command, Duration)| {
        // A timeout from a peer is bounded (`PEER_TIMEOUT_MAX`).
        let timeout = crate::rpc::clamp_peer_timeout(timeout);
        let me = weak.upgrade().map(|inner| Consensus { inner });
        async move {
            match me {
                Some(me) if me.is_leader() => me.write_here(command, timeout).await,
                _ => Err(ConsensusError::NotLeader),
            }
        }
    });
    // What clients call on any member (a node of the mesh that runs no
    // consensus, e.g. the test kit's workload): the member forwards to the
    // leader as `reach_consensus` and `query` do.
    let weak = Arc::downgrade(inner);
    cluster.register_rpc(CLIENT_SUBMIT, move |(command, timeout): (Command, Duration)| {
        // A timeout from a peer is bounded (`PEER_TIMEOUT_MAX`).
        let timeout = crate::rpc::clamp_peer_timeout(timeout);
        let me = weak.upgrade().map(|inner| Consensus { inner });
        async move {
            match me {
                Some(me) => me.reach_consensus(command, timeout).await,
                None => Err(ConsensusError::Raft("stopped".into())),
            }
        }
    });
    let weak = Arc::downgrade(inner);
    cluster.register_rpc(CLIENT_QUERY, move |(query, timeout): (Query, Duration)| {
        // A timeout from a peer is bounded (`PEER_TIMEOUT_MAX`).
        let timeout = crate::rpc::clamp_peer_timeout(timeout);
        let me = weak.upgrade().map(|inner| Consensus { inner });
        async move {
            match me {
                Some(me) => me.query(query, timeout).await,
                None => Err(ConsensusError::Raft("stopped".into())),
            }
        }
    });
    let weak = Arc::downgrade(inner);
    cluster.register_rpc(CLIENT_LOCAL_STATE, move |(): ()| {
        let me = weak.upgrade().map(|inner| Consensus { inner });
        async move {
            match me {
                Some(me) => Ok((me.applied_index().await, me.local_state().await)),
                None => Err(ConsensusError::Raft("stopped".into())),
            }
        }
    });
    let weak = Arc::downgrade(inner);
    cluster.register_rpc("consensus.read", move |(query, timeout): (Query, Duration)| {
        // A timeout from a peer is bounded (`PEER_TIMEOUT_MAX`).
        let timeout = crate::rpc::clamp_peer_timeout(timeout);
        let me = weak.upgrade().map(|inner| Consensus { inner });
        async move {
            match me {
                Some(me) if me.is_leader() => me.read_here(&query, timeout).await,
                _ => Err(ConsensusError::NotLeader),
            }
        }
    });
}
