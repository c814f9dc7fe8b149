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
//!   at a time, and installs the snapshot when the last one arrives. A
//!   member with a data directory writes the rows into a new state
//!   database as the chunks arrive, so a chunk is answered when its disk
//!   has room for it: a chunk's deadline is [`SNAPSHOT_CHUNK_TTL`], not a
//!   heartbeat's.

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

use super::store::snapshot::SnapshotDir;
use super::store::{SnapshotData, Staging, StorageHealth, StoreIdentity};
use super::types::{Member, NodeId, TypeConfig};
use crate::mesh::WeakCluster;
use crate::rpc::RpcError;

/// Creates a client per target member.
pub struct Network {
    pub(crate) cluster: WeakCluster,
    pub(crate) me: NodeId,
    /// The mesh's frame limit.
    pub(crate) frame_limit: usize,
    /// Whose answers were taken (recorded before each first one counts).
    pub(crate) participants: super::store::Participants,
    /// Where snapshot sends are reported (`foundation.consensus.snapshot_send`).
    pub(crate) telemetry: Option<crate::services::Telemetry>,
}

/// Sends one member's RPCs.
pub struct Client {
    cluster: WeakCluster,
    me: NodeId,
    target: NodeId,
    member: Member,
    frame_limit: usize,
    participants: super::store::Participants,
    telemetry: Option<crate::services::Telemetry>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Client {
        Client {
            cluster: self.cluster.clone(),
            me: self.me,
            target,
            member: node.clone(),
            frame_limit: self.frame_limit,
            participants: self.participants.clone(),
            telemetry: self.telemetry.clone(),
        }
    }
}

/// Most bytes of entries in one append: half a frame (the rest of the
/// frame is the request's own fields and the RPC envelope).
pub fn append_bytes_max(frame_limit: usize) -> usize {
    frame_limit / 2
}

/// The slowest link an append is given time for, in bytes a second.
pub const APPEND_RATE_FLOOR: u64 = 1 << 20;

/// How long a leader waits for an append's answer: openraft's `soft_ttl`
/// (three quarters of a heartbeat) plus the append's bytes at
/// [`APPEND_RATE_FLOOR`] (1 MiB/s: 8 s for the largest). With `soft_ttl` alone (30 ms by default), an
/// append of a MiB on a link of 4 MiB/s timed out and was sent again, for
/// ever: values that large never committed (the `slow_link` nemesis).
/// Heartbeats and small appends keep the heartbeat's timeout.
pub fn append_ttl(soft_ttl: std::time::Duration, bytes: usize) -> std::time::Duration {
    soft_ttl + std::time::Duration::from_secs_f64(bytes as f64 / APPEND_RATE_FLOOR as f64)
}

/// Bytes of snapshot in one chunk: a quarter of a frame, at most 4 MiB.
pub fn snapshot_chunk_bytes(frame_limit: usize) -> usize {
    (frame_limit / 4).clamp(1024, 4 << 20)
}

/// How long a leader waits for the answer to a snapshot's chunk: a
/// follower answers once its disk has taken the chunk's rows, which a disk
/// under writeback can delay for seconds. With the RPC's usual 150 ms, a
/// slow disk made the leader start the transfer again, and again.
pub const SNAPSHOT_CHUNK_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a leader waits for the answer to a snapshot's last chunk: the
/// follower makes the snapshot durable and installs it before it answers
/// (seconds per GiB). With the RPC's usual 150 ms, a large install timed
/// out and the leader sent the snapshot again from its start while it was
/// installing.
pub const SNAPSHOT_INSTALL_TTL: std::time::Duration = std::time::Duration::from_secs(120);

/// Largest snapshot a member receives into memory (storage without a
/// data directory); with one, it is written to a file as it arrives, and
/// the disk is the bound.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

/// An entry's size on the wire, about (the command's bytes and a margin
/// for the log id, the payload's tag and the encoding).
pub fn entry_bytes(e: &openraft::alias::EntryOf<TypeConfig>) -> usize {
    payload_bytes(&e.payload)
}

/// A payload's size on the wire, about (see [`entry_bytes`]).
pub fn payload_bytes(p: &EntryPayload<super::types::Command, NodeId, Member>) -> usize {
    const MARGIN: usize = 64;
    match p {
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
/// metadata, where the chunk starts, whether it is the last, and the
/// bytes. (A snapshot is encoded as it is sent: its length is known only
/// at its end.)
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotChunk {
    pub vote: VoteOf<TypeConfig>,
    pub meta: openraft::alias::SnapshotMetaOf<TypeConfig>,
    pub offset: u64,
    pub last: bool,
    #[serde(with = "super::types::bytes")]
    pub data: Vec<u8>,
}

/// A whole snapshot received: the leader's vote, the snapshot and its
/// length in bytes.
pub(crate) type Received = (VoteOf<TypeConfig>, openraft::alias::SnapshotOf<TypeConfig, SnapshotData>, u64);

/// Where a snapshot being received goes.
enum Spool {
    /// Held whole (no data directory).
    Memory(Box<Held>),
    /// Written into a new state database as it arrives (its reader checks
    /// the hash).
    Stage(Staging),
}

/// A snapshot held in memory as it arrives, with the hash of its bytes
/// before its own hash (its last 32), and those last bytes: checked before
/// it installs.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    hash: blake3::Hasher,
    tail: Vec<u8>,
}

const HASH_BYTES: usize = 32;

impl Held {
    fn take(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.tail.extend_from_slice(data);
        let body = self.tail.len().saturating_sub(HASH_BYTES);
        self.hash.update(&self.tail[..body]);
        self.tail.drain(..body);
    }

    /// The snapshot, if its hash checks.
    fn checked(self) -> Option<Vec<u8>> {
        (self.tail == self.hash.finalize().as_bytes()).then_some(self.bytes)
    }
}

/// A snapshot being received.
struct Incoming {
    vote: VoteOf<TypeConfig>,
    meta: openraft::alias::SnapshotMetaOf<TypeConfig>,
    received: u64,
    spool: Spool,
}

/// The receiving side of snapshot transfers: one at a time, chunks in
/// order. A chunk that does not continue the transfer in progress (out of
/// order, repeated, from another leader or of another snapshot) is refused
/// and ends that transfer: the leader starts again from offset 0. With a
/// data directory, the rows are written into a new state database under
/// its `snapshots/` as they arrive (nothing is held whole in memory); a
/// snapshot whose hash does not check is refused. A write that fails (no
/// space) is logged and reported to the member's storage health.
pub(crate) struct SnapshotReceiver {
    incoming: tokio::sync::Mutex<Option<Incoming>>,
    /// The data directory's snapshots, and whose state they become.
    dir: Option<(SnapshotDir, StoreIdentity)>,
    health: StorageHealth,
    /// Largest snapshot taken into memory.
    memory_max: u64,
}

impl SnapshotReceiver {
    /// Receives into memory, or into a new state database under `data` (a
    /// data directory, and whose it is).
    pub(crate) fn new(data: Option<(&std::path::Path, StoreIdentity)>, health: StorageHealth) -> Self {
        let dir = data.map(|(d, identity)| (SnapshotDir::at(d), identity));
        Self { incoming: tokio::sync::Mutex::new(None), dir, health, memory_max: SNAPSHOT_BYTES_MAX }
    }

    /// Takes `chunk`; the whole snapshot once its last chunk arrived.
    pub(crate) async fn take(&self, chunk: SnapshotChunk) -> Result<Option<Received>, String> {
        let SnapshotChunk { vote, meta, offset, last, data } = chunk;
        let mut slot = self.incoming.lock().await;
        if offset == 0 {
            // A new transfer replaces any other.
            let spool = match &self.dir {
                None => Spool::Memory(Box::default()),
                Some((dir, identity)) => Spool::Stage(Staging::start(dir, identity.clone()).map_err(|e| self.failed(&e))?),
            };
            *slot = Some(Incoming { vote, meta, received: 0, spool });
        } else {
            let continues = slot.as_ref().is_some_and(|i| i.vote == vote && i.meta == meta && i.received == offset);
            if !continues {
                let expected = slot.as_ref().map(|i| i.received);
                *slot = None;
                return Err(format!(
                    "snapshot chunk at offset {offset} does not continue the transfer in progress (expected offset {expected:?}): start again"
                ));
            }
        }
        let Some(mut incoming) = slot.take() else { unreachable!("set above") };
        if self.dir.is_none() && incoming.received + data.len() as u64 > self.memory_max {
            return Err(format!("a snapshot over the limit of {} bytes held in memory: start again", self.memory_max));
        }
        incoming.received += data.len() as u64;
        match &mut incoming.spool {
            Spool::Memory(held) => held.take(&data),
            Spool::Stage(staging) => staging.push(data).await.map_err(|e| self.refused(&e))?,
        }
        if !last {
            *slot = Some(incoming);
            return Ok(None);
        }
        let snapshot = match incoming.spool {
            Spool::Memory(held) => {
                let bytes = held.checked().ok_or("the snapshot received does not match its hash: start again")?;
                SnapshotData::Bytes(std::sync::Arc::new(bytes))
            }
            Spool::Stage(staging) => {
                let staged = staging.finish().await.map_err(|e| self.refused(&e))?;
                if staged.meta != incoming.meta {
                    return Err("the snapshot's header does not match the transfer's metadata: start again".into());
                }
                SnapshotData::Staged(std::sync::Arc::new(staged))
            }
        };
        Ok(Some((incoming.vote, openraft::Snapshot { meta: incoming.meta, snapshot }, incoming.received)))
    }

    /// A staged transfer that failed: a snapshot that does not check is
    /// refused; a write that failed is the member's storage failing.
    fn refused(&self, e: &std::io::Error) -> String {
        if e.kind() == std::io::ErrorKind::InvalidData {
            format!("the snapshot received is refused ({e}): start again")
        } else {
            self.failed(e)
        }
    }

    fn failed(&self, e: &std::io::Error) -> String {
        let why = format!("receiving a snapshot failed: {e}");
        tracing::error!(error = %e, "receiving a snapshot failed: this member cannot catch up until it can write");
        self.health.fail(why.clone());
        why
    }
}

impl Client {
    async fn call<Req, Resp>(
        &self,
        action: openraft::RPCTypes,
        name: &str,
        req: Req,
        ttl: std::time::Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize + 'static,
        Resp: DeserializeOwned + 'static,
    {
        let Some(cluster) = self.cluster.upgrade() else {
            return Err(RPCError::Unreachable(Unreachable::from_string("this node has shut down")));
        };
        let reply = cluster.rpc::<Req, Result<Resp, String>>(&self.member.name, name, req, ttl).await;
        match reply {
            Ok(Ok(resp)) => {
                // The target answered on its store: from now on an empty
                // store under its id is refused (see `Participants`).
                self.participants.record(self.target).await.map_err(|e| {
                    RPCError::Unreachable(Unreachable::from_string(format!(
                        "the answer of {} could not be recorded: {e}",
                        self.member.name
                    )))
                })?;
                Ok(resp)
            }
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
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut rpc = rpc;
        let cut = cap_entries(&mut rpc, append_bytes_max(self.frame_limit));
        let ttl = append_ttl(option.soft_ttl(), rpc.entries.iter().map(entry_bytes).sum());
        let resp: AppendEntriesResponse<TypeConfig> = self.call(openraft::RPCTypes::AppendEntries, "raft.append", rpc, ttl).await?;
        Ok(match (resp, cut) {
            // The rest goes in the next append.
            (AppendEntriesResponse::Success, Some(last)) => AppendEntriesResponse::PartialSuccess(Some(last)),
            (resp, _) => resp,
        })
    }

    async fn vote(&mut self, rpc: VoteRequest<TypeConfig>, option: RPCOption) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(openraft::RPCTypes::Vote, "raft.vote", rpc, option.soft_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(openraft::RPCTypes::Vote, "raft.pre_vote", rpc, option.soft_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let chunk = snapshot_chunk_bytes(self.frame_limit);
        let sent_bytes = std::sync::atomic::AtomicU64::new(0);
        let send = async {
            let network = |e: std::io::Error| RPCError::Network(NetworkError::new(&e));
            let mut chunks = snapshot.snapshot.stream(chunk);
            let mut next = chunks.next().await.transpose().map_err(network)?;
            let mut offset = 0u64;
            loop {
                let data = next.take().unwrap_or_default();
                next = chunks.next().await.transpose().map_err(network)?;
                let (len, last) = (data.len() as u64, next.is_none());
                let part = SnapshotChunk { vote, meta: snapshot.meta.clone(), offset, last, data };
                // The last chunk is answered once the snapshot is installed,
                // which takes as long as the state is large.
                let ttl = option.soft_ttl().max(if last { SNAPSHOT_INSTALL_TTL } else { SNAPSHOT_CHUNK_TTL });
                let installed: Option<SnapshotResponse<TypeConfig>> =
                    self.call(openraft::RPCTypes::InstallSnapshot, "raft.snapshot_chunk", part, ttl).await?;
                offset += len;
                sent_bytes.store(offset, std::sync::atomic::Ordering::Relaxed);
                match installed {
                    Some(resp) => return Ok(resp),
                    None if last => {
                        return Err(RPCError::Network(NetworkError::from_string("the snapshot's last chunk was not installed")));
                    }
                    None => {}
                }
            }
        };
        let (to, index) = (&self.member.name, snapshot.meta.last_log_id.as_ref().map(|l| l.index));
        tracing::info!(%to, index, "sending a snapshot");
        let start = foundation::rt::Instant::now();
        let sent = tokio::select! {
            biased;
            r = send => r.map_err(|e| match e {
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                other => StreamingError::Network(NetworkError::new(&other)),
            }),
            closed = cancel => Err(StreamingError::Closed(closed)),
        };
        let bytes = sent_bytes.into_inner();
        match &sent {
            Ok(_) => tracing::info!(%to, index, bytes, "sent a snapshot"),
            Err(e) => tracing::warn!(%to, index, bytes, error = %e, "sending a snapshot failed"),
        }
        if self.telemetry.is_some() {
            let me = self.cluster.upgrade().map(|c| c.name().to_owned()).unwrap_or_default();
            super::observe::emit(
                &self.telemetry,
                "foundation.consensus.snapshot_send",
                &[("index", index.unwrap_or(0) as f64), ("bytes", bytes as f64), ("seconds", start.elapsed().as_secs_f64())],
                &[("member", &me), ("follower", to), ("outcome", if sent.is_ok() { "sent" } else { "failed" })],
            );
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

    fn chunk(term: u64, index: u64, offset: u64, last: bool, data: &[u8]) -> SnapshotChunk {
        SnapshotChunk { vote: vote(term), meta: meta(index), offset, last, data: data.to_vec() }
    }

    /// A real snapshot's bytes (its hash at the end).
    fn snapshot_bytes(index: u64) -> Vec<u8> {
        let mut state = super::super::types::State::default();
        state.kv.insert("k".into(), vec![1; 100]);
        super::super::store::snapshot::encode_state(&meta(index), &state).unwrap()
    }

    fn me() -> StoreIdentity {
        StoreIdentity { cluster_id: "c".into(), id: 2 }
    }

    /// Both receivers: into memory, and into a new database under a fresh
    /// directory.
    fn receivers(tag: &str) -> Vec<(SnapshotReceiver, Option<std::path::PathBuf>)> {
        let dir = std::env::temp_dir().join(format!("foundation-receiver-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("snapshots")).unwrap();
        vec![
            (SnapshotReceiver::new(None, StorageHealth::default()), None),
            (SnapshotReceiver::new(Some((&dir, me())), StorageHealth::default()), Some(dir)),
        ]
    }

    #[tokio::test]
    async fn chunks_in_order_make_the_snapshot_in_memory_or_in_a_new_database() {
        let bytes = snapshot_bytes(10);
        for (r, dir) in receivers("order") {
            assert!(r.take(chunk(2, 10, 0, false, &bytes[..7])).await.unwrap().is_none());
            let (v, snap, _) = r.take(chunk(2, 10, 7, true, &bytes[7..])).await.unwrap().expect("complete");
            assert_eq!(v, vote(2));
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut snap.snapshot.reader(), &mut got).unwrap();
            assert_eq!(got, bytes);
            assert_eq!(matches!(snap.snapshot, SnapshotData::Staged(_)), dir.is_some());
            if let Some(d) = dir {
                std::fs::remove_dir_all(d).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn out_of_order_repeated_foreign_oversized_and_corrupt_chunks_are_refused_and_end_the_transfer() {
        let bytes = snapshot_bytes(10);
        let (head, rest) = bytes.split_at(3);
        for (mut r, dir) in receivers("refuse") {
            // Out of order: nothing in progress.
            assert!(r.take(chunk(2, 10, 3, true, rest)).await.unwrap_err().contains("does not continue"));
            // Repeated.
            r.take(chunk(2, 10, 0, false, head)).await.unwrap();
            assert!(r.take(chunk(2, 10, 0, false, head)).await.unwrap().is_none(), "offset 0 starts again");
            r.take(chunk(2, 10, 3, false, &rest[..1])).await.unwrap();
            assert!(r.take(chunk(2, 10, 3, false, &rest[..1])).await.is_err(), "a repeated chunk");
            // The transfer ended: its continuation is refused too.
            assert!(r.take(chunk(2, 10, 4, true, &rest[1..])).await.is_err());
            // Another leader's vote, or another snapshot, mid-transfer.
            r.take(chunk(2, 10, 0, false, head)).await.unwrap();
            assert!(r.take(chunk(3, 10, 3, true, rest)).await.is_err(), "another term");
            r.take(chunk(2, 10, 0, false, head)).await.unwrap();
            assert!(r.take(chunk(2, 12, 3, true, rest)).await.is_err(), "another snapshot");
            // Truncated (the last chunk short), a byte more, a damaged byte:
            // the hash does not check.
            for bad in [rest[..rest.len() - 1].to_vec(), [rest, &[0]].concat(), {
                let mut b = rest.to_vec();
                b[5] ^= 1;
                b
            }] {
                r.take(chunk(2, 10, 0, false, head)).await.unwrap();
                let err = r.take(chunk(2, 10, 3, true, &bad)).await.unwrap_err();
                // In memory the hash is checked at the end; a staged
                // snapshot's reader refuses it where it stops making sense.
                assert!(if dir.is_none() { err.contains("hash") } else { err.contains("is refused") }, "{err}");
                assert!(r.health.failure().is_none(), "a bad snapshot is not a storage failure: {err}");
            }
            if dir.is_none() {
                // Over the size limit held in memory.
                r.memory_max = 100;
                r.take(chunk(2, 10, 0, false, &[0; 60])).await.unwrap();
                assert!(r.take(chunk(2, 10, 60, false, &[0; 60])).await.unwrap_err().contains("over the limit"));
                r.memory_max = SNAPSHOT_BYTES_MAX;
            }
            // A clean start after all of it.
            r.take(chunk(2, 10, 0, false, head)).await.unwrap();
            assert!(r.take(chunk(2, 10, 3, true, rest)).await.unwrap().is_some());
            if let Some(d) = dir {
                // Nothing of the refused transfers is left (their threads
                // remove their files as they stop), nor of the staged one,
                // dropped uninstalled.
                let spool = d.join("snapshots");
                foundation_testutil::assert_eventually(
                    "the refused transfers' files are removed",
                    || std::fs::read_dir(&spool).unwrap().next().is_none(),
                    std::time::Duration::from_secs(10),
                )
                .await;
                std::fs::remove_dir_all(d).unwrap();
            }
        }
    }

    /// A follower whose disk has no room for a snapshot says why (the
    /// transfer's error, its log, its storage health: `/status`), on a
    /// 1 MiB tmpfs the test mounts. Needs root (CI runs as root); without
    /// it the test says so and checks nothing.
    #[tokio::test]
    async fn a_snapshot_with_no_room_to_land_is_refused_and_reported() {
        let dir = std::env::temp_dir().join(format!("foundation-receiver-full-{}", std::process::id()));
        let spool = dir.join("snapshots");
        std::fs::create_dir_all(&spool).unwrap();
        let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&spool).status();
        if !mounted.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let health = StorageHealth::default();
        let r = SnapshotReceiver::new(Some((&dir, me())), health.clone());
        let mut state = super::super::types::State::default();
        state.kv.insert("big".into(), vec![7; 2 << 20]);
        let big = super::super::store::snapshot::encode_state(&meta(10), &state).unwrap();
        let err = r.take(chunk(2, 10, 0, true, &big)).await.unwrap_err();
        let _ = std::process::Command::new("umount").arg("-l").arg(&spool).status();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.contains("receiving a snapshot failed") && err.to_lowercase().contains("space"), "{err}");
        assert!(health.failure().is_some_and(|why| why == err), "{:?}", health.failure());
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
