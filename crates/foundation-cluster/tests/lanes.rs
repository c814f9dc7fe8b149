//! Lanes: a process that never reads its mailbox, flooded from the
//! leader's node, holds up nothing else on its node's connections. Raft's
//! appends reach its node (it keeps applying), heartbeats keep the pair up,
//! and RPCs to other handlers complete.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use foundation::{MailboxConfig, SpawnOpts};
use foundation_cluster::consensus::{Command, Consensus, ConsensusConfig, Member};
use foundation_cluster::{Cluster, NodeEvent};

mod common;
use common::{WAIT, start, until};

const T: Duration = Duration::from_secs(5);

async fn group() -> (Vec<Cluster>, Vec<Consensus>) {
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(start(&format!("node{i}")).await);
    }
    for c in &nodes[1..] {
        c.connect(nodes[0].addr()).await.expect("joins");
    }
    for c in &nodes {
        until("the mesh is complete", || c.peers().len() == 2).await;
    }
    let mut members = Vec::new();
    for (i, c) in nodes.iter().enumerate() {
        members.push(Consensus::start(c, ConsensusConfig::new(i as u64 + 1)).await.expect("starts"));
    }
    let all: BTreeMap<u64, Member> =
        nodes.iter().enumerate().map(|(i, c)| (i as u64 + 1, Member { name: c.name().to_owned(), addr: c.addr().to_owned() })).collect();
    members[0].initialize(all).await.expect("initialized");
    for m in &members {
        m.wait_for_leader(WAIT).await.expect("a leader");
    }
    (nodes, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_process_that_never_reads_holds_up_no_consensus_heartbeat_or_rpc() {
    let (nodes, members) = group().await;
    let (leader_id, _) = members[0].leader().expect("a leader");
    let li = members.iter().position(|m| m.id() == leader_id).expect("the leader is a member");
    let fi = (li + 1) % 3;
    let (leader, follower) = (&nodes[li], &nodes[fi]);
    let mut leader_events = leader.subscribe();
    follower.register_message::<Vec<u8>>();
    follower.register_rpc("echo", |n: u64| async move { n });
    // A process on the follower that never reads.
    let opts = SpawnOpts { mailbox: Some(Arc::new(MailboxConfig::bounded(8))), ..SpawnOpts::default() };
    let stuck = follower.node().spawn_with(opts, |_ctx: foundation::Ctx<Vec<u8>>| std::future::pending::<()>()).expect("spawned").pid();
    // The leader's node floods it, from a task of its own.
    let flooder = leader.clone();
    let flood = foundation::rt::spawn(async move {
        for _ in 0..4096 {
            if flooder.send_wait(stuck, vec![1u8; 1024]).await.is_err() {
                return;
            }
        }
    });
    // Consensus keeps committing, and the follower keeps applying.
    let mut last = 0;
    for i in 0..20 {
        let d = members[li].reach_consensus(Command::Put { key: format!("k{i}"), value: vec![1] }, T).await.expect("committed");
        last = d.index;
    }
    let f = &members[fi];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let applied = f.applied_index().await.unwrap_or(0);
        if applied >= last {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the flooded follower applied up to {applied}, not {last}, within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An RPC to another handler on the follower's node completes.
    let echoed: Result<u64, _> = leader.rpc(follower.name(), "echo", 5u64, T).await;
    assert_eq!(echoed, Ok(5), "an rpc from the flooding node completes");
    // Heartbeats keep the pair up.
    assert!(leader.peers().contains(&follower.name().to_owned()));
    let downs: Vec<NodeEvent> =
        std::iter::from_fn(|| leader_events.try_recv().ok()).filter(|e| matches!(e, NodeEvent::Down { .. })).collect();
    assert!(downs.is_empty(), "no peer went down: {downs:?}");
    flood.abort();
    for m in &members {
        m.shutdown().await;
    }
}

/// A sender that waits for room (`send_wait`) loses nothing to a remote
/// process that reads more slowly than it sends: the receiver's node
/// pauses it, and what was already on its way when the pause went out
/// waits for the mailbox. (The `remote.one_way` bench hung on this: its
/// receiver never got all of its messages.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_waits_for_room_loses_nothing_to_a_slower_remote_reader() {
    let a = start("fast").await;
    let b = start("slow").await;
    a.connect(b.addr()).await.expect("joins");
    until("a sees b", || a.peers().len() == 1).await;
    b.register_message::<u64>();
    const N: u64 = 300_000;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let receiver = b
        .node()
        .spawn(move |mut ctx: foundation::Ctx<u64>| async move {
            let mut sum = 0u64;
            for i in 0..N {
                sum = sum.wrapping_add(ctx.recv().await);
                if i % 1024 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let _ = done_tx.send(sum);
        })
        .pid();
    let sender = a.clone();
    foundation::rt::spawn(async move {
        for i in 0..N {
            sender.send_wait(receiver, i).await.expect("sent");
        }
    });
    let sum = tokio::time::timeout(Duration::from_secs(60), done_rx).await;
    assert_eq!(b.dropped_messages(), 0, "remote messages dropped on the slow node");
    assert_eq!(sum.expect("every message arrived within 60 s").expect("the receiver ran"), N * (N - 1) / 2);
}

/// The control lane: an RPC queued after 48 MiB of messages to one peer
/// is written before them. The messages and the call are queued while the
/// path to the peer is held (a relay stops reading), so the order in which
/// the writer takes them decides; then the path opens. The relay finds the
/// call's name in the stream: with one FIFO (before the lanes) it came
/// after all 48 MiB; now after at most what the socket buffers held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_overtakes_the_messages_queued_before_it() {
    const FLOOD: usize = 48;
    const MIB: u64 = 1 << 20;
    let a = start("sender").await;
    let b = start("receiver").await;
    let (pause, paused) = tokio::sync::watch::channel(false);
    let (via, call_at) = common::pausable_relay(b.addr().to_owned(), paused, b"overtaking-call").await;
    a.connect_to("receiver", &via).await.expect("joins through the relay");
    until("a sees b", || a.peers().len() == 1).await;
    b.register_message::<bytes::Bytes>();
    b.register_rpc("overtaking-call", |(): ()| async {});
    // Processes that never read: what reached them stays in their mailboxes.
    let sinks: Vec<_> =
        (0..FLOOD).map(|_| b.node().spawn(|_ctx: foundation::Ctx<bytes::Bytes>| std::future::pending::<()>()).pid()).collect();
    pause.send_replace(true);
    // One 1 MiB message each (a `Bytes` payload is queued without a copy),
    // inside each one's credit window: all of them are queued.
    let payload = bytes::Bytes::from(vec![7u8; MIB as usize]);
    for pid in &sinks {
        a.send(*pid, payload.clone()).expect("queued");
    }
    let caller = a.clone();
    let mut call = Box::pin(async move { caller.rpc::<(), ()>("receiver", "overtaking-call", (), Duration::from_secs(30)).await });
    // One poll queues the call's frame (its lane has room), then the call
    // waits for its reply: the path opens only after the call is queued.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "the call waits for its reply: {first:?}");
    pause.send_replace(false);
    call.await.expect("answered");
    let at = call_at.lock().expect("not poisoned").expect("the relay saw the call");
    assert!(at < FLOOD as u64 * MIB, "the call went out after all {FLOOD} MiB queued before it (at byte {at})");
    let all = || sinks.iter().map(|p| b.node().process_info(*p).map_or(0, |i| i.mailbox_len)).sum::<usize>();
    until("the messages arrive too", || all() == FLOOD).await;
}
