//! Raft's RPCs over Foundation's transport: each one is a cluster RPC to the
//! target member's node (`raft.append`, `raft.vote`, `raft.pre_vote`,
//! `raft.snapshot_chunk`), bounded by the RPC option's soft TTL.
//!
//! Whatever the proposals' sizes, nothing sent is over the mesh's frame
//! limit:
//! - an append carries entries up to [`append_bytes_max`] (half a frame):
//!   the rest waits for the next append (openraft's `PartialSuccess`);
//! - a snapshot goes in chunks of [`snapshot_chunk_bytes`], each one
//!   acknowledged before the next is sent (backpressure); the receiver
//!   (`SnapshotReceiver`) accepts them only in order, for one transfer
//!   at a time, and installs the snapshot when the last one arrives.

use std::future::Future;

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;

use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use serde::Deserialize;

use super::types::{Member, NodeId, TypeConfig};
use crate::mesh::WeakCluster;
use crate::rpc::RpcError;

/// Creates a client per target member.
pub struct Network {
    pub(crate) cluster: WeakCluster,
    pub(crate) me: NodeId,
    /// The mesh's frame limit.
    pub(crate) frame_limit: usize,
}

/// Sends one member's RPCs.
pub struct Client {
    cluster: WeakCluster,
    me: NodeId,
    target: NodeId,
    member: Member,
    frame_limit: usize,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Client {
        Client { cluster: self.cluster.clone(), me: self.me, target, member: node.clone(), frame_limit: self.frame_limit }
    }
}

/// Most bytes of entries in one append: half a frame (the rest of the
/// frame is the request's own fields and the RPC envelope).
pub fn append_bytes_max(frame_limit: usize) -> usize {
    frame_limit / 2
}

/// Bytes of snapshot in one chunk: a quarter of a frame, at most 4 MiB.
pub fn snapshot_chunk_bytes(frame_limit: usize) -> usize {
    (frame_limit / 4).clamp(1024, 4 << 20)
}

/// Largest snapshot a member accepts (the receiver holds it whole until it
/// installs it).
pub const SNAPSHOT_BYTES_MAX: u64 = 4 << 30;

/// An entry's size on the wire, about (the command's bytes and a margin
/// for the log id, the payload's tag and the encoding).
pub fn entry_bytes(e: &openraft::alias::EntryOf<TypeConfig>) -> usize {
    const MARGIN: usize = 64;
    match &e.payload {
        EntryPayload::Normal(cmd) => cmd.size() + MARGIN,
        EntryPayload::Membership(m) => 64 * m.nodes().count() + MARGIN,
        EntryPayload::Blank => MARGIN,
    }
}

/// Keeps the first entries of `rpc` that fit in `max` bytes (at least one)
/// and returns the log id of the last one kept when some were cut.
fn cap_entries(rpc: &mut AppendEntriesRequest<TypeConfig>, max: usize) -> Option<openraft::alias::LogIdOf<TypeConfig>> {
    let mut bytes = 0;
    let keep = rpc.entries.iter().take_while(|e| {
        bytes += entry_bytes(e);
        bytes <= max
    });
    let keep = keep.count().max(1);
    if keep >= rpc.entries.len() {
        return None;
    }
    rpc.entries.truncate(keep);
    rpc.entries.last().map(|e| e.log_id())
}

/// One chunk of a snapshot on the wire: the leader's vote, the snapshot's
/// metadata, where the chunk starts, the snapshot's whole length, and the
/// bytes.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotChunk {
    pub vote: VoteOf<TypeConfig>,
    pub meta: openraft::alias::SnapshotMetaOf<TypeConfig>,
    pub offset: u64,
    pub total: u64,
    pub data: Vec<u8>,
}

/// A whole snapshot received: the leader's vote and the snapshot.
pub(crate) type Received = (VoteOf<TypeConfig>, openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>);

/// A snapshot being received.
struct Incoming {
    vote: VoteOf<TypeConfig>,
    meta: openraft::alias::SnapshotMetaOf<TypeConfig>,
    total: u64,
    data: Vec<u8>,
}

/// The receiving side of snapshot transfers: one at a time, chunks in
/// order. A chunk that does not continue the transfer in progress (out of
/// order, repeated, from another leader or of another snapshot) is refused
/// and ends that transfer: the leader starts again from offset 0.
#[derive(Default)]
pub(crate) struct SnapshotReceiver {
    incoming: parking_lot::Mutex<Option<Incoming>>,
}

impl SnapshotReceiver {
    /// Takes `chunk`; the whole snapshot once its last chunk arrived.
    pub(crate) fn take(&self, chunk: SnapshotChunk) -> Result<Option<Received>, String> {
        let SnapshotChunk { vote, meta, offset, total, data } = chunk;
        let mut slot = self.incoming.lock();
        if total > SNAPSHOT_BYTES_MAX {
            *slot = None;
            return Err(format!("a snapshot of {total} bytes is over the limit of {SNAPSHOT_BYTES_MAX}"));
        }
        if offset == 0 {
            // A new transfer replaces any other.
            *slot = Some(Incoming { vote, meta, total, data: Vec::with_capacity(total.min(64 << 20) as usize) });
        } else {
            let continues =
                slot.as_ref().is_some_and(|i| i.vote == vote && i.meta == meta && i.total == total && i.data.len() as u64 == offset);
            if !continues {
                let expected = slot.as_ref().map(|i| i.data.len());
                *slot = None;
                return Err(format!(
                    "snapshot chunk at offset {offset} does not continue the transfer in progress (expected offset {expected:?}): start again"
                ));
            }
        }
        let Some(incoming) = slot.as_mut() else { unreachable!("set above") };
        if incoming.data.len() as u64 + data.len() as u64 > incoming.total {
            *slot = None;
            return Err(format!("snapshot chunk at offset {offset} runs past the snapshot's {total} bytes"));
        }
        incoming.data.extend_from_slice(&data);
        if (incoming.data.len() as u64) < incoming.total {
            return Ok(None);
        }
        let Some(done) = slot.take() else { unreachable!("set above") };
        Ok(Some((done.vote, openraft::Snapshot { meta: done.meta, snapshot: done.data })))
    }
}

impl Client {
    async fn call<Req, Resp>(
        &self,
        action: openraft::RPCTypes,
        name: &str,
        req: Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize + 'static,
        Resp: DeserializeOwned + 'static,
    {
        let Some(cluster) = self.cluster.upgrade() else {
            return Err(RPCError::Unreachable(Unreachable::from_string("this node has shut down")));
        };
        let ttl = option.soft_ttl();
        let reply = cluster.rpc::<Req, Result<Resp, String>>(&self.member.name, name, req, ttl).await;
        match reply {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(RPCError::Network(NetworkError::from_string(format!("{}: {remote}", self.member.name)))),
            Err(RpcError::Timeout { .. }) => Err(RPCError::Timeout(Timeout { action, id: self.me, target: self.target, timeout: ttl })),
            Err(e @ (RpcError::NoConnection { .. } | RpcError::Lost { .. } | RpcError::UnknownHandler { .. })) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Client {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut rpc = rpc;
        let cut = cap_entries(&mut rpc, append_bytes_max(self.frame_limit));
        let resp: AppendEntriesResponse<TypeConfig> = self.call(openraft::RPCTypes::AppendEntries, "raft.append", rpc, &option).await?;
        Ok(match (resp, cut) {
            // The rest goes in the next append.
            (AppendEntriesResponse::Success, Some(last)) => AppendEntriesResponse::PartialSuccess(Some(last)),
            (resp, _) => resp,
        })
    }

    async fn vote(&mut self, rpc: VoteRequest<TypeConfig>, option: RPCOption) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(openraft::RPCTypes::Vote, "raft.vote", rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(openraft::RPCTypes::Vote, "raft.pre_vote", rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let chunk = snapshot_chunk_bytes(self.frame_limit);
        let total = snapshot.snapshot.len() as u64;
        let send = async {
            let mut offset = 0usize;
            loop {
                let end = (offset + chunk).min(snapshot.snapshot.len());
                let part = SnapshotChunk {
                    vote,
                    meta: snapshot.meta.clone(),
                    offset: offset as u64,
                    total,
                    data: snapshot.snapshot[offset..end].to_vec(),
                };
                let installed: Option<SnapshotResponse<TypeConfig>> =
                    self.call(openraft::RPCTypes::InstallSnapshot, "raft.snapshot_chunk", part, &option).await?;
                offset = end;
                match installed {
                    Some(resp) => return Ok(resp),
                    None if offset >= snapshot.snapshot.len() => {
                        return Err(RPCError::Network(NetworkError::from_string("the snapshot's last chunk was not installed")));
                    }
                    None => {}
                }
            }
        };
        let (to, index) = (&self.member.name, snapshot.meta.last_log_id.as_ref().map(|l| l.index));
        tracing::info!(%to, index, bytes = total, "sending a snapshot");
        let sent = tokio::select! {
            r = send => r.map_err(|e| match e {
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                other => StreamingError::Network(NetworkError::new(&other)),
            }),
            closed = cancel => Err(StreamingError::Closed(closed)),
        };
        match &sent {
            Ok(_) => tracing::info!(%to, index, bytes = total, "sent a snapshot"),
            Err(e) => tracing::warn!(%to, index, bytes = total, error = %e, "sending a snapshot failed"),
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type LeaderId = openraft::alias::LeaderIdOf<TypeConfig>;

    fn vote(term: u64) -> VoteOf<TypeConfig> {
        VoteOf::<TypeConfig>::new_committed(term, 1)
    }

    fn log_id(index: u64) -> openraft::alias::LogIdOf<TypeConfig> {
        openraft::LogId { leader_id: <LeaderId as openraft::vote::RaftLeaderIdExt>::new_committed(1, 1), index }
    }

    fn meta(index: u64) -> openraft::alias::SnapshotMetaOf<TypeConfig> {
        openraft::SnapshotMeta { last_log_id: Some(log_id(index)), last_membership: Default::default() }
    }

    fn chunk(term: u64, index: u64, offset: u64, total: u64, data: &[u8]) -> SnapshotChunk {
        SnapshotChunk { vote: vote(term), meta: meta(index), offset, total, data: data.to_vec() }
    }

    #[test]
    fn chunks_in_order_make_the_snapshot() {
        let r = SnapshotReceiver::default();
        assert!(r.take(chunk(2, 10, 0, 6, b"abc")).unwrap().is_none());
        let (v, snap) = r.take(chunk(2, 10, 3, 6, b"def")).unwrap().expect("complete");
        assert_eq!((v, snap.snapshot), (vote(2), b"abcdef".to_vec()));
        // An empty snapshot is one empty chunk.
        assert!(r.take(chunk(2, 11, 0, 0, b"")).unwrap().is_some());
    }

    #[test]
    fn out_of_order_repeated_foreign_and_overlong_chunks_are_refused_and_end_the_transfer() {
        let r = SnapshotReceiver::default();
        // Out of order: nothing in progress.
        assert!(r.take(chunk(2, 10, 3, 6, b"def")).unwrap_err().contains("does not continue"));
        // Repeated.
        r.take(chunk(2, 10, 0, 6, b"abc")).unwrap();
        assert!(r.take(chunk(2, 10, 0, 6, b"abc")).unwrap().is_none(), "offset 0 starts again");
        r.take(chunk(2, 10, 3, 6, b"d")).unwrap();
        assert!(r.take(chunk(2, 10, 3, 6, b"d")).is_err(), "a repeated chunk");
        // The transfer ended: its continuation is refused too.
        assert!(r.take(chunk(2, 10, 4, 6, b"ef")).is_err());
        // Another leader's vote, or another snapshot, mid-transfer.
        r.take(chunk(2, 10, 0, 6, b"abc")).unwrap();
        assert!(r.take(chunk(3, 10, 3, 6, b"def")).is_err(), "another term");
        r.take(chunk(2, 10, 0, 6, b"abc")).unwrap();
        assert!(r.take(chunk(2, 12, 3, 6, b"def")).is_err(), "another snapshot");
        // Past the announced length.
        r.take(chunk(2, 10, 0, 6, b"abc")).unwrap();
        assert!(r.take(chunk(2, 10, 3, 6, b"defg")).unwrap_err().contains("runs past"));
        // Over the size limit.
        assert!(r.take(chunk(2, 10, 0, SNAPSHOT_BYTES_MAX + 1, b"a")).unwrap_err().contains("over the limit"));
        // A clean start after all of it.
        r.take(chunk(2, 10, 0, 2, b"a")).unwrap();
        assert!(r.take(chunk(2, 10, 1, 2, b"b")).unwrap().is_some());
    }

    #[test]
    fn appends_are_capped_in_bytes_but_carry_at_least_one_entry() {
        let entry = |i: u64, len: usize| openraft::alias::EntryOf::<TypeConfig> {
            log_id: log_id(i),
            payload: EntryPayload::Normal(super::super::types::Command::Put { key: format!("k{i}"), value: vec![0; len] }),
        };
        let mut rpc = AppendEntriesRequest::<TypeConfig> {
            vote: vote(1),
            prev_log_id: None,
            entries: (1..=10).map(|i| entry(i, 1000)).collect(),
            leader_commit: None,
        };
        let cut = cap_entries(&mut rpc, 3_500).expect("cut");
        assert_eq!((rpc.entries.len(), cut.index), (3, 3));
        let mut one = AppendEntriesRequest::<TypeConfig> { entries: vec![entry(1, 10_000)], ..rpc.clone() };
        assert!(cap_entries(&mut one, 3_500).is_none(), "a lone large entry still goes");
        assert_eq!(one.entries.len(), 1);
    }
}
