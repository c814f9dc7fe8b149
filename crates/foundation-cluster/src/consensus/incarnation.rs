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

use super::network::{Network, SnapshotChunk, SnapshotReceiver};
use super::store::{self, OpenOptions, StateMachine, StorageHealth};
use super::types::{Command, Query, TypeConfig};
use super::{CLIENT_LOCAL_STATE, CLIENT_QUERY, CLIENT_SUBMIT, Consensus, ConsensusConfig, ConsensusError, Inner, raft_err, runtime};
use crate::mesh::Cluster;

/// The RPC that says what a member's leader has replicated to a member id:
/// `NodeId -> Option<u64>` (the matched index, if this member leads and
/// knows one).
pub const REPLICATED_RPC: &str = "consensus.replicated";

/// A member with an empty store whose id the group's leader has already
/// replicated entries to has lost its data (its data directory emptied):
/// it must not vote again under that id. Asks the peers it is connected
/// to; one that leads and has a matched index for `id` refuses the start.
/// (A leader elected while the member was down has no such index: that
/// case is not caught here.)
async fn refuse_if_replicated_before(cluster: &Cluster, id: super::NodeId) -> Result<(), ConsensusError> {
    for peer in cluster.peers() {
        let answer: Result<Option<u64>, _> = cluster.rpc(&peer, REPLICATED_RPC, id, Duration::from_secs(1)).await;
        if let Ok(Some(index)) = answer {
            return Err(ConsensusError::Storage(format!(
                "this member's Raft storage is empty, but the leader {peer} had replicated entries up to {index} to member {id}: \
                 it lost its data and must not vote again under id {id}; to rejoin, start it with an empty --data-dir and a new --id, \
                 and add that id to the group"
            )));
        }
    }
    Ok(())
}

/// Pause between attempts to reopen a failed storage.
pub const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// A Raft member and its state machine, on storage opened once.
#[derive(Clone)]
pub(super) struct Incarnation {
    pub raft: Raft<TypeConfig, StateMachine>,
    pub sm: StateMachine,
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
        refuse_if_replicated_before(cluster, config.id).await?;
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
    let network = Network { cluster: cluster.downgrade(), me: config.id, frame_limit: cluster.frame_limit() };
    // openraft's timers draw from the node's seeded RNG (see `runtime`).
    let seed = cluster.node().rt().with_rng(rand::Rng::random::<u64>) ^ config.id;
    let raft = runtime::scope(seed, Raft::new(config.id, Arc::new(raft_config), network, log, sm.clone())).await.map_err(raft_err)?;
    Ok(Incarnation { raft, sm })
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
    let current = |weak: &Weak<Inner>| -> Result<Raft<TypeConfig, StateMachine>, String> {
        let inner = weak.upgrade().ok_or("this member stopped")?;
        if let Some(why) = inner.health.failure() {
            return Err(format!("this member's storage failed: {why}"));
        }
        Ok(inner.current.read().raft.clone())
    };
    let weak = Arc::downgrade(inner);
    cluster.register_rpc("raft.append", move |req| {
        let raft = current(&weak);
        async move { raft?.append_entries(req).await.map_err(|e| e.to_string()) }
    });
    let weak = Arc::downgrade(inner);
    cluster.register_rpc("raft.vote", move |req| {
        let raft = current(&weak);
        async move { raft?.vote(req).await.map_err(|e| e.to_string()) }
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
    cluster.register_rpc("raft.snapshot_chunk", move |chunk: SnapshotChunk| {
        let (raft, receiver) = (current(&weak), receiver.clone());
        async move {
            let raft = raft?;
            match receiver.take(chunk).await? {
                None => Ok(None),
                Some((vote, snapshot, bytes)) => {
                    let index = snapshot.meta.last_log_id.as_ref().map(|l| l.index);
                    tracing::info!(index, bytes, "installing a snapshot from the leader");
                    let installed = raft.install_full_snapshot(vote, snapshot).await.map(Some).map_err(|e| e.to_string());
                    match &installed {
                        Ok(_) => tracing::info!(index, bytes, "installed a snapshot from the leader"),
                        Err(e) => tracing::warn!(index, bytes, error = %e, "a snapshot from the leader was not installed"),
                    }
                    installed
                }
            }
        }
    });
    let weak = Arc::downgrade(inner);
    cluster.register_rpc(REPLICATED_RPC, move |id: super::NodeId| {
        let matched = weak.upgrade().and_then(|inner| {
            let metrics = inner.current.read().raft.metrics().borrow_watched().clone();
            metrics.replication.and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index)
        });
        async move { matched }
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
