//! Raft's RPCs over Foundation's transport: each one is a cluster RPC to the
//! target member's node (`raft.append`, `raft.vote`, `raft.pre_vote`,
//! `raft.snapshot`), bounded by the RPC option's soft TTL.

use std::future::Future;

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{Member, NodeId, TypeConfig};
use crate::mesh::WeakCluster;
use crate::rpc::RpcError;

/// Creates a client per target member.
pub struct Network {
    pub(crate) cluster: WeakCluster,
    pub(crate) me: NodeId,
}

/// Sends one member's RPCs.
pub struct Client {
    cluster: WeakCluster,
    me: NodeId,
    target: NodeId,
    member: Member,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Client {
        Client { cluster: self.cluster.clone(), me: self.me, target, member: node.clone() }
    }
}

/// A snapshot on the wire.
pub(crate) type SnapshotWire = (VoteOf<TypeConfig>, openraft::alias::SnapshotMetaOf<TypeConfig>, Vec<u8>);

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
        self.call(openraft::RPCTypes::AppendEntries, "raft.append", rpc, &option).await
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
        let wire: SnapshotWire = (vote, snapshot.meta, snapshot.snapshot);
        let send = self.call::<_, SnapshotResponse<TypeConfig>>(openraft::RPCTypes::InstallSnapshot, "raft.snapshot", wire, &option);
        tokio::select! {
            r = send => r.map_err(|e| match e {
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                other => StreamingError::Network(NetworkError::new(&other)),
            }),
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}
