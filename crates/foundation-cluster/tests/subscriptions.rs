//! A `ConfigService::subscribe` task ends when its receiver drops (it used
//! to wait for the key's next change, holding the consensus member).

use std::time::Duration;

use foundation_cluster::server::{Server, ServerConfig, Service};

mod common;
use common::{free_ports, secret, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_task_ends_when_its_receiver_drops() {
    let port = free_ports(1)[0];
    // One node: no peers, so no RPC tasks come and go beside the count.
    let config = ServerConfig {
        traces: None,
        id: 1,
        name: "s1".into(),
        listen: format!("127.0.0.1:{port}"),
        http: None,
        admin: Default::default(),
        peers: Vec::new(),
        data_dir: None,
        secret: secret(),
        cluster_id: "subscriptions".into(),
        lan: false,
        services: Service::ALL.into_iter().collect(),
        rt: Default::default(),
        disk: None,
        frame_limit: None,
        disk_faults: Default::default(),
        tls: None,
        snapshots: Default::default(),
    };
    let server = Server::start(config).await.expect("starts");
    until("operational", || server.consensus().expect("consensus runs").status().operational).await;
    let service = server.config().expect("config runs");
    // The node's tasks run on the shared scheduler pool (the default).
    let pool = foundation::rt::SchedulerPool::shared().expect("the shared pool");
    let alive = || pool.handles().iter().map(|h| h.metrics().num_alive_tasks()).sum::<usize>();
    let before = alive();
    const SUBSCRIBERS: usize = 50;
    let mut receivers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        receivers.push(service.subscribe("feature/flag").await.expect("subscribed"));
    }
    assert!(alive() >= before + SUBSCRIBERS, "a task per subscription");
    drop(receivers);
    // The key never changes: the tasks must end on their own.
    foundation_testutil::assert_eventually("the subscription tasks ended", || alive() < before + SUBSCRIBERS / 2, Duration::from_secs(10))
        .await;
}
