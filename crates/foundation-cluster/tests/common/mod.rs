//! Shared by the cluster's integration tests: nodes on loopback that tick
//! fast, and waits with explicit timeouts.
#![allow(dead_code)]

use std::time::Duration;

use foundation::Node;
use foundation_cluster::mesh::{Cluster, ClusterConfig, NodeEvent};
use foundation_cluster::secret::ClusterSecret;
use tokio::sync::broadcast;

pub const WAIT: Duration = Duration::from_secs(5);

pub fn secret() -> ClusterSecret {
    ClusterSecret::new("mesh-test-secret-0123456789", "test").expect("valid")
}

/// A fast-ticking node: 100 ms heartbeats, down after 4 silent ticks.
pub async fn start(name: &str) -> Cluster {
    let mut config = ClusterConfig::new(name, "127.0.0.1:0", secret());
    config.tick = Duration::from_millis(100);
    Cluster::start(Node::new(name), config).await.expect("listens")
}

pub async fn eventually_peers(c: &Cluster, want: &[&str]) {
    let what = format!("{} has peers {want:?}", c.name());
    until(&what, || c.peers() == want).await;
}

/// Waits until `condition` holds, at most [`WAIT`].
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "not met within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn next_event(rx: &mut broadcast::Receiver<NodeEvent>) -> NodeEvent {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("an event in time").expect("events open")
}

pub async fn mesh_of_three() -> (Cluster, Cluster, Cluster) {
    let (a, b, c) = (start("a").await, start("b").await, start("c").await);
    assert_eq!(b.connect(a.addr()).await.expect("b joins a"), "a");
    assert_eq!(c.connect(a.addr()).await.expect("c joins a"), "a");
    // c learns b through a, and the mesh completes.
    for (n, want) in [(&a, ["b", "c"]), (&b, ["a", "c"]), (&c, ["a", "b"])] {
        eventually_peers(n, &want).await;
    }
    (a, b, c)
}
