//! The names of a node that crashed (it never releases them) go within
//! `REGISTRY_DOWN_GRACE` + `REGISTRY_SWEEP` of its loss.

use std::time::Duration;

use foundation_cluster::server::Server;
use foundation_cluster::services::{REGISTRY_DOWN_GRACE, REGISTRY_SWEEP};

mod common;
use common::{free_ports, until};

const T: Duration = Duration::from_secs(5);

async fn three_servers() -> Vec<Server> {
    let ports = free_ports(3);
    let mut servers = Vec::new();
    for i in 0..3 {
        let config = common::member("r", i, &ports, "registry-crash");
        servers.push(Server::start(config).await.expect("starts"));
    }
    for s in &servers {
        until("operational", || s.consensus().expect("consensus runs").status().operational).await;
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_names_of_a_crashed_node_go_within_the_stated_bound() {
    let servers = three_servers().await;
    let leader = servers[0].consensus().expect("consensus runs").status().leader.expect("a leader");
    // The crashing node is a follower, so the other two keep a quorum.
    let crashing = servers.iter().position(|s| s.cluster().name() != leader).expect("a follower");
    let survivor = servers.iter().position(|s| s.cluster().name() != leader && s.cluster().name() != servers[crashing].cluster().name());
    let survivor = &servers[survivor.expect("another follower")];
    let worker = servers[crashing].cluster().node().spawn(|mut ctx: foundation::Ctx<()>| async move { ctx.recv().await });
    servers[crashing].registry().expect("registry runs").register("job", worker.pid(), T).await.expect("registered");
    let registry = survivor.registry().expect("registry runs");
    assert_eq!(registry.whereis("job", T).await, Ok(Some(worker.pid())));
    // A crash: the node vanishes from the mesh; its process never exits
    // there, so nothing on it releases the name.
    servers[crashing].cluster().shutdown();
    let bound = REGISTRY_DOWN_GRACE + REGISTRY_SWEEP + T;
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match registry.whereis("job", T).await {
            Ok(None) => break,
            other => assert!(tokio::time::Instant::now() < deadline, "the crashed node's name is still there after {bound:?}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
