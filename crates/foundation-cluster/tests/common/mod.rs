//! Shared by the cluster's integration tests: nodes on loopback that tick
//! fast, and waits with explicit timeouts.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use foundation::Node;
use foundation::rt::RtConfig;
use foundation_cluster::admin::AdminConfig;
use foundation_cluster::mesh::{Cluster, ClusterConfig, NodeEvent};
use foundation_cluster::secret::ClusterSecret;
use foundation_cluster::server::{ServerConfig, Service};
use tokio::sync::broadcast;

pub const WAIT: Duration = Duration::from_secs(5);

/// `n` free loopback ports (see `foundation_testutil::ports`).
pub fn free_ports(n: usize) -> Vec<u16> {
    foundation_testutil::ports::free_ports(n).expect("free loopback ports")
}

pub fn secret() -> ClusterSecret {
    ClusterSecret::new("mesh-test-secret-0123456789-0123456789", "test").expect("valid")
}

/// A one-node cluster `a` running every service, with its admin API on a
/// free loopback port under `admin`.
pub fn one_node(admin: AdminConfig, data_dir: Option<PathBuf>) -> ServerConfig {
    ServerConfig {
        traces: None,
        id: 1,
        name: "a".into(),
        listen: "127.0.0.1:0".into(),
        http: Some("127.0.0.1:0".into()),
        admin,
        peers: Vec::new(),
        data_dir,
        secret: secret(),
        cluster_id: "admin".into(),
        lan: true,
        services: Service::ALL.into_iter().collect::<BTreeSet<_>>(),
        rt: RtConfig::default(),
        disk: None,
        frame_limit: None,
        disk_faults: Default::default(),
        tls: None,
        snapshots: Default::default(),
    }
}

/// Member `i` (named `PREFIX{i+1}`, id `i+1`) of a cluster whose members
/// listen on `ports` of loopback, every other one its peer; every service,
/// in memory, no admin API.
pub fn member(prefix: &str, i: usize, ports: &[u16], cluster_id: &str) -> ServerConfig {
    let peers = (0..ports.len())
        .filter(|j| *j != i)
        .map(|j| foundation_cluster::server::PeerSpec {
            id: j as u64 + 1,
            name: format!("{prefix}{}", j + 1),
            addr: format!("127.0.0.1:{}", ports[j]),
        })
        .collect();
    ServerConfig {
        traces: None,
        id: i as u64 + 1,
        name: format!("{prefix}{}", i + 1),
        listen: format!("127.0.0.1:{}", ports[i]),
        http: None,
        admin: AdminConfig::default(),
        peers,
        data_dir: None,
        secret: secret(),
        cluster_id: cluster_id.into(),
        lan: false,
        services: Service::ALL.into_iter().collect::<BTreeSet<_>>(),
        rt: RtConfig::default(),
        disk: None,
        frame_limit: None,
        disk_faults: Default::default(),
        tls: None,
        snapshots: Default::default(),
    }
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

/// A byte-for-byte relay on a free loopback port towards `target`; while
/// `paused` holds `true` it stops reading from the dialer, so what the
/// dialer writes piles up in its socket buffers and then in its own queues.
/// It also watches the dialer's bytes for `marker` (records are sealed,
/// not encrypted) and keeps the offset of its first appearance.
pub async fn pausable_relay(
    target: String,
    paused: tokio::sync::watch::Receiver<bool>,
    marker: &'static [u8],
) -> (String, std::sync::Arc<std::sync::Mutex<Option<u64>>>) {
    use foundation::rt::Network;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = foundation::rt::TokioNetwork.bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("addr");
    let found = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = found.clone();
    foundation::rt::spawn(async move {
        while let Ok((from, _)) = listener.accept().await {
            let Ok(to) = foundation::rt::TokioNetwork.connect(&target).await else { continue };
            let ((mut fr, mut fw), (mut tr, mut tw)) = (tokio::io::split(from), tokio::io::split(to));
            let (mut paused, seen) = (paused.clone(), seen.clone());
            foundation::rt::spawn(async move {
                let (mut buf, mut offset, mut window) = (vec![0u8; 64 << 10], 0u64, Vec::new());
                loop {
                    let open = paused.wait_for(|p| !p).await.map(|_| ()).is_ok();
                    if !open {
                        return;
                    }
                    let n = match fr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    // The marker may straddle two reads: search the tail of the last one too.
                    let keep = window.len();
                    window.extend_from_slice(&buf[..n]);
                    if let Some(at) = window.windows(marker.len()).position(|w| w == marker) {
                        seen.lock().expect("not poisoned").get_or_insert(offset + at as u64 - keep as u64);
                    }
                    offset += n as u64;
                    window.drain(..window.len().saturating_sub(marker.len()));
                    if tw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            foundation::rt::spawn(async move {
                let _ = tokio::io::copy(&mut tr, &mut fw).await;
            });
        }
    });
    (addr, found)
}
