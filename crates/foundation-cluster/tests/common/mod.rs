//! Shared by the cluster's integration tests: nodes on loopback that tick
//! fast, and waits with explicit timeouts.
#![allow(dead_code)]

use std::time::Duration;

use foundation::Node;
use foundation_cluster::mesh::{Cluster, ClusterConfig, NodeEvent};
use foundation_cluster::secret::ClusterSecret;
use tokio::sync::broadcast;

pub const WAIT: Duration = Duration::from_secs(5);

/// `n` free loopback ports (see `foundation_testutil::ports`).
pub fn free_ports(n: usize) -> Vec<u16> {
    foundation_testutil::ports::free_ports(n).expect("free loopback ports")
}

pub fn secret() -> ClusterSecret {
    ClusterSecret::new("mesh-test-secret-0123456789-0123456789", "test").expect("valid")
}

/// A node with 100 ms heartbeats, down after 30 silent ticks (3 s: tests
/// run beside each other on two cores, and a loaded machine can hold a
/// connection's task for longer than a production-like 4 ticks).
pub async fn start(name: &str) -> Cluster {
    start_with(name, 30).await
}

/// A node with 100 ms heartbeats, down after `ticks_to_down` silent ticks.
pub async fn start_with(name: &str, ticks_to_down: u32) -> Cluster {
    let mut config = ClusterConfig::new(name, "127.0.0.1:0", secret());
    config.tick = Duration::from_millis(100);
    config.ticks_to_down = ticks_to_down;
    Cluster::start(Node::new(name), config).await.expect("listens")
}

pub async fn eventually_peers(c: &Cluster, want: &[&str]) {
    let what = format!("{} has peers {want:?}", c.name());
    until(&what, || c.peers() == want).await;
}

/// Waits until `condition` holds, at most [`WAIT`].
pub async fn until(what: &str, condition: impl FnMut() -> bool) {
    until_within(what, WAIT, condition).await;
}

/// Waits until `condition` holds, at most `limit`.
pub async fn until_within(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "not met within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn next_event(rx: &mut broadcast::Receiver<NodeEvent>) -> NodeEvent {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("an event in time").expect("events open")
}

pub async fn mesh_of_three() -> (Cluster, Cluster, Cluster) {
    mesh_of(["a", "b", "c"]).await
}

/// Three nodes with these names: the second and third join the first, and
/// the third learns the second through it.
pub async fn mesh_of(names: [&str; 3]) -> (Cluster, Cluster, Cluster) {
    let (a, b, c) = (start(names[0]).await, start(names[1]).await, start(names[2]).await);
    assert_eq!(b.connect(a.addr()).await.expect("joins the first"), names[0]);
    assert_eq!(c.connect(a.addr()).await.expect("joins the first"), names[0]);
    for (n, i) in [(&a, 0), (&b, 1), (&c, 2)] {
        let mut want: Vec<&str> = names.iter().copied().filter(|m| *m != names[i]).collect();
        want.sort_unstable();
        eventually_peers(n, &want).await;
    }
    (a, b, c)
}
