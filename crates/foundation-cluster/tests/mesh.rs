//! Three nodes on loopback, in one process, through the runtime seam's
//! network: joining, the full mesh, node down, disconnect/connect, a wrong
//! secret, garbage and oversized frames.

use std::time::Duration;

use foundation::Node;
use foundation_cluster::frame::write_frame;
use foundation_cluster::handshake;
use foundation_cluster::mesh::{Cluster, ClusterConfig, ClusterError, NodeEvent};
use foundation_cluster::secret::ClusterSecret;
use tokio::io::AsyncWriteExt;

mod common;
use common::{eventually_peers, mesh_of_three, next_event, secret, start_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_one_member_joins_the_full_mesh() {
    let (a, b, c) = mesh_of_three().await;
    for n in [&a, &b, &c] {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_is_reported_down_by_the_others() {
    let (a, b, c) = mesh_of_three().await;
    let (mut ea, mut eb) = (a.subscribe(), b.subscribe());
    c.shutdown();
    for rx in [&mut ea, &mut eb] {
        assert!(matches!(next_event(rx).await, NodeEvent::Down { ref node, .. } if node == "c"));
    }
    eventually_peers(&a, &["b"]).await;
    eventually_peers(&b, &["a"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_down_after_its_ticks() {
    let a = start_with("a", 4).await;
    let mut events = a.subscribe();
    // A peer that authenticates, then never sends a heartbeat.
    let net = foundation::rt::TokioNetwork;
    let mut stream = foundation::rt::Network::connect(&net, a.addr()).await.expect("connect");
    handshake::dial(&mut stream, "mute", &secret(), [7; 32]).await.expect("authenticated");
    assert_eq!(next_event(&mut events).await, NodeEvent::Up { node: "mute".into() });
    let started = tokio::time::Instant::now();
    match next_event(&mut events).await {
        NodeEvent::Down { node, reason } => {
            assert_eq!(node, "mute");
            assert!(reason.contains("silent"), "{reason}");
        }
        other => panic!("expected Down, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "down after {took:?} (4 ticks of 100 ms)");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_holds_until_connect() {
    let (a, b, c) = mesh_of_three().await;
    let mut eb = b.subscribe();
    assert!(a.disconnect("b"));
    assert!(matches!(next_event(&mut eb).await, NodeEvent::Down { ref node, .. } if node == "a"));
    eventually_peers(&a, &["c"]).await;
    // No one re-dials while the disconnect holds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.peers(), ["c"]);
    assert_eq!(a.connect(b.addr()).await.expect("reconnect"), "b");
    assert_eq!(next_event(&mut eb).await, NodeEvent::Up { node: "a".into() });
    eventually_peers(&a, &["b", "c"]).await;
    c.shutdown();
}

/// `b.disconnect("a")` holds too, although `a` (the smaller name) is the
/// one that re-dials a lost connection: `b` refuses it in the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_by_the_node_whose_name_sorts_later_holds_until_connect() {
    let (a, b, c) = mesh_of_three().await;
    let mut ea = a.subscribe();
    assert!(b.disconnect("a"));
    assert!(matches!(next_event(&mut ea).await, NodeEvent::Down { ref node, .. } if node == "b"));
    eventually_peers(&b, &["c"]).await;
    // `a` re-dials after its backoff (100 ms first): it must never be up
    // with `b` again while the disconnect holds.
    let up_again = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match ea.recv().await {
                Ok(NodeEvent::Up { node }) if node == "b" => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    })
    .await;
    assert!(up_again.is_err(), "a was up with b again while b's disconnect held");
    assert_eq!(b.peers(), ["c"]);
    assert_eq!(b.connect(a.addr()).await.expect("reconnect"), "a");
    eventually_peers(&a, &["b", "c"]).await;
    eventually_peers(&b, &["a", "c"]).await;
    c.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_never_joins() {
    let (a, b, _c) = mesh_of_three().await;
    let mut config =
        ClusterConfig::new("intruder", "127.0.0.1:0", ClusterSecret::new("not-the-cluster-secret-but-long-enough!!", "test").unwrap());
    config.tick = Duration::from_millis(100);
    let intruder = Cluster::start(Node::new("intruder"), config).await.expect("listens");
    let err = intruder.connect(a.addr()).await.expect_err("refused");
    assert!(matches!(err, ClusterError::Handshake { .. }), "{err}");
    assert!(err.to_string().contains("secret"), "{err}");
    assert_eq!(a.peers(), ["b", "c"]);
    assert!(intruder.peers().is_empty());
    let _ = b;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_only_their_connection() {
    let (a, b, c) = mesh_of_three().await;
    let mut ea = a.subscribe();
    let net = foundation::rt::TokioNetwork;
    // Garbage before any handshake.
    let mut raw = foundation::rt::Network::connect(&net, a.addr()).await.expect("connect");
    raw.write_all(b"\x00\x00\x00\x05hello garbage that is not a frame").await.expect("write");
    // An authenticated peer that then sends a frame over the limit.
    let mut rogue = foundation::rt::Network::connect(&net, a.addr()).await.expect("connect");
    handshake::dial(&mut rogue, "rogue", &secret(), [9; 32]).await.expect("authenticated");
    assert_eq!(next_event(&mut ea).await, NodeEvent::Up { node: "rogue".into() });
    let huge = vec![0u8; 20 << 20];
    let _ = write_frame(&mut rogue, b"", &huge, usize::MAX).await;
    match next_event(&mut ea).await {
        NodeEvent::Down { node, reason } => {
            assert_eq!(node, "rogue");
            assert!(reason.contains("over the limit"), "{reason}");
        }
        other => panic!("expected rogue Down, got {other:?}"),
    }
    // An authenticated peer whose frame header does not decode (in a
    // properly sealed record).
    let mut confused = foundation::rt::Network::connect(&net, a.addr()).await.expect("connect");
    let peer = handshake::dial(&mut confused, "confused", &secret(), [5; 32]).await.expect("authenticated");
    assert_eq!(next_event(&mut ea).await, NodeEvent::Up { node: "confused".into() });
    let mut frame = Vec::new();
    write_frame(&mut frame, &[0xff, 0xff, 0xff, 0xff], b"", 1 << 20).await.expect("encoded");
    let mut sealer = peer.keys.sealer();
    sealer.push(&frame);
    sealer.write(&mut confused, &[]).await.expect("written");
    match next_event(&mut ea).await {
        NodeEvent::Down { node, reason } => {
            assert_eq!(node, "confused");
            assert!(reason.contains("malformed"), "{reason}");
        }
        other => panic!("expected confused Down, got {other:?}"),
    }
    // An authenticated peer that sends a record with a forged tag.
    let mut unsealed = foundation::rt::Network::connect(&net, a.addr()).await.expect("connect");
    handshake::dial(&mut unsealed, "unsealed", &secret(), [6; 32]).await.expect("authenticated");
    assert_eq!(next_event(&mut ea).await, NodeEvent::Up { node: "unsealed".into() });
    let mut forged = Vec::new();
    write_frame(&mut forged, &[0], b"", 1 << 20).await.expect("encoded");
    unsealed.write_all(&(forged.len() as u32).to_be_bytes()).await.expect("written");
    unsealed.write_all(&forged).await.expect("written");
    unsealed.write_all(&[0u8; foundation_cluster::seal::TAG_BYTES]).await.expect("written");
    match next_event(&mut ea).await {
        NodeEvent::Down { node, reason } => {
            assert_eq!(node, "unsealed");
            assert!(reason.contains("authentication"), "{reason}");
        }
        other => panic!("expected unsealed Down, got {other:?}"),
    }
    // The others are untouched.
    assert_eq!(a.peers(), ["b", "c"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.peers(), ["b", "c"]);
    let _ = (b, c);
}

/// Pids carry a 32-bit hash of their node's name. A node whose name hashes
/// like a connected peer's is refused with a typed error, from either
/// side, and the mesh keeps serving the first. ("node-522789" and
/// "node-739192" share FNV-1a hash d634d7cb. Before, the second silently
/// took over the first one's route.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_whose_hash_collides_with_a_peers_is_refused_and_the_peer_keeps_serving() {
    let hub = common::start("hub").await;
    let first = common::start("node-522789").await;
    first.connect(hub.addr()).await.expect("the first joins");
    eventually_peers(&hub, &["node-522789"]).await;
    let second = common::start("node-739192").await;
    // Dialing the hub: the hub refuses it after the handshake.
    let refused = second.connect(hub.addr()).await.expect_err("refused");
    assert!(matches!(&refused, ClusterError::Handshake { .. }) && refused.to_string().contains("hashes like node-522789"), "{refused}");
    // The hub dialing it: refused on the hub's side, typed.
    let refused = hub.connect(second.addr()).await.expect_err("refused");
    assert!(matches!(&refused, ClusterError::NameCollision { taken, .. } if taken == "node-522789"), "{refused}");
    // The first still reaches the hub.
    hub.register_rpc("echo", |n: u64| async move { n });
    assert_eq!(first.rpc::<u64, u64>("hub", "echo", 7, Duration::from_secs(5)).await, Ok(7));
    assert_eq!(hub.peers(), vec!["node-522789".to_owned()]);
}

/// A `Node` belongs to one cluster: a second `Cluster` on it is refused,
/// typed (before, the second silently had no distribution layer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_cluster_on_one_node_is_refused() {
    let node = Node::new("twice");
    let _first = Cluster::start(node.clone(), ClusterConfig::new("twice", "127.0.0.1:0", secret())).await.expect("the first");
    let second = Cluster::start(node, ClusterConfig::new("twice", "127.0.0.1:0", secret())).await.expect_err("the second is refused");
    assert!(matches!(second, ClusterError::AlreadyDistributed { .. }), "{second}");
}

/// A cluster's tasks (its accept loop, each connection's task) run where
/// its node's processes run: two nodes on a scheduler pool, started and
/// connected from a runtime outside the pool, leave no task on that
/// runtime, and the pool's task count grows by theirs.
#[test]
fn a_clusters_tasks_run_on_its_nodes_scheduler_pool() {
    use foundation::NodeConfig;
    use foundation::rt::{RtConfig, SchedulerPool, Spawner};
    let pool = SchedulerPool::new(2).expect("scheduler threads");
    let on_pool = |pool: &SchedulerPool| pool.handles().iter().map(|h| h.metrics().num_alive_tasks()).sum::<usize>();
    let node = |name: &str| {
        let rt = RtConfig { spawner: Spawner::Pool(pool.clone()), ..RtConfig::default() };
        Node::with_config(NodeConfig { name: name.into(), rt, ..NodeConfig::default() }).expect("valid config")
    };
    let (node_a, node_b) = (node("a"), node("b"));
    let before = on_pool(&pool);
    let outside = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime outside the pool");
    let (a, b, left_outside) = outside.block_on(async {
        let config = |name: &str| ClusterConfig::new(name, "127.0.0.1:0", secret());
        let a = Cluster::start(node_a, config("a")).await.expect("a listens");
        let b = Cluster::start(node_b, config("b")).await.expect("b listens");
        a.connect(b.addr()).await.expect("a connects to b");
        eventually_peers(&a, &["b"]).await;
        eventually_peers(&b, &["a"]).await;
        (a, b, tokio::runtime::Handle::current().metrics().num_alive_tasks())
    });
    // Two accept loops and a connection task at each end, at least.
    let grown = on_pool(&pool) - before;
    assert_eq!(left_outside, 0, "cluster tasks ran on the runtime that started the clusters ({grown} on the pool)");
    assert!(grown >= 4, "the pool runs the clusters' tasks: {grown} more tasks");
    // Their sockets belong to the pool too: with the starting runtime gone,
    // the connection still carries calls, and b still accepts.
    drop(outside);
    b.register_rpc("echo", |x: u64| async move { x });
    let later = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("another runtime");
    later.block_on(async {
        let back = a.rpc::<u64, u64>("b", "echo", 7, Duration::from_secs(5)).await;
        assert_eq!(back.expect("a call over the connection made from the dropped runtime"), 7);
        let c = Cluster::start(Node::new("c"), ClusterConfig::new("c", "127.0.0.1:0", secret())).await.expect("c listens");
        c.connect(b.addr()).await.expect("b still accepts");
        c.shutdown();
    });
    for c in [a, b] {
        c.shutdown();
    }
}
