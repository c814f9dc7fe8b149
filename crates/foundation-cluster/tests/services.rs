//! The cluster services on three in-process node servers: Config (validated,
//! consensus-backed, subscribable), Registry (cluster-wide names that go
//! with their process), Telemetry (attach/emit/detach and Prometheus), and
//! the node's event store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use foundation_cluster::server::{PeerSpec, Server, ServerConfig};
use foundation_cluster::services::{ConfigError, RegistryError};
use serde_json::json;

mod common;
use common::{secret, until};

const T: Duration = Duration::from_secs(5);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn three_servers() -> Vec<Server> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut servers = Vec::new();
    for i in 0..3 {
        let peers = (0..3)
            .filter(|j| *j != i)
            .map(|j| PeerSpec { id: j as u64 + 1, name: format!("s{}", j + 1), addr: format!("127.0.0.1:{}", ports[j]) })
            .collect();
        let config = ServerConfig {
            id: i as u64 + 1,
            name: format!("s{}", i + 1),
            listen: format!("127.0.0.1:{}", ports[i]),
            http: None,
            peers,
            data_dir: None,
            secret: secret(),
            cluster_id: "services".into(),
            lan: false,
        };
        servers.push(Server::start(config).await.expect("starts"));
    }
    for s in &servers {
        until("operational", || s.consensus().status().operational).await;
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_is_validated_committed_and_followed_cluster_wide() {
    let servers = three_servers().await;
    for s in &servers {
        s.config().validate("limits/", |v| match v.as_i64() {
            Some(n) if n >= 0 => Ok(()),
            _ => Err("a limit is a non-negative integer".into()),
        });
    }
    let mut follow = servers[2].config().subscribe("limits/connections").await.expect("subscribed");
    assert_eq!(*follow.borrow(), None);
    let err = servers[0].config().update("limits/connections", json!(-5), T).await.expect_err("invalid");
    assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "limits/connections"), "{err}");
    assert!(matches!(servers[0].config().update("", json!(1), T).await, Err(ConfigError::BadKey(_))));
    servers[1].config().update("limits/connections", json!(100), T).await.expect("valid");
    assert_eq!(servers[2].config().get("limits/connections", T).await, Ok(Some(json!(100))));
    tokio::time::timeout(T, follow.wait_for(|v| *v == Some(json!(100)))).await.expect("in time").expect("open");
    servers[0].config().update("limits/connections", json!(200), T).await.expect("valid");
    tokio::time::timeout(T, follow.wait_for(|v| *v == Some(json!(200)))).await.expect("in time").expect("open");
    // Values outside any validated prefix are free-form.
    servers[0].config().update("name", json!({"display": "demo"}), T).await.expect("stored");
    assert_eq!(servers[1].config().get("name", T).await, Ok(Some(json!({"display": "demo"}))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_names_are_cluster_wide_and_leave_with_their_process() {
    let servers = three_servers().await;
    let node = servers[0].cluster().node().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = node.spawn(move |_ctx: foundation::Ctx<()>| async move {
        let _ = stopped.await;
    });
    servers[0].registry().register("worker", worker.pid(), T).await.expect("registered");
    assert_eq!(servers[2].registry().whereis("worker", T).await, Ok(Some(worker.pid())));
    let other = servers[1].cluster().node().spawn(|mut ctx: foundation::Ctx<()>| async move { ctx.recv().await });
    let taken = servers[1].registry().register("worker", other.pid(), T).await;
    assert_eq!(taken, Err(RegistryError::Taken { name: "worker".into(), pid: worker.pid() }));
    // The process ends: its name goes.
    let _ = stop.send(());
    let deadline = tokio::time::Instant::now() + T;
    while servers[1].registry().whereis("worker", T).await != Ok(None) {
        assert!(tokio::time::Instant::now() < deadline, "the name outlived its process");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    servers[1].registry().register("worker", other.pid(), T).await.expect("free again");
    assert!(servers[1].registry().unregister("worker", other.pid(), T).await.expect("decided"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_handlers_attach_and_detach_and_events_are_recorded() {
    let servers = three_servers().await;
    let telemetry = servers[0].telemetry();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let id = telemetry.attach("db.", move |event, measurements, _| {
        assert!(event.starts_with("db."));
        if measurements.contains_key("duration_ms") {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let m = BTreeMap::from([("duration_ms".to_owned(), 3.5)]);
    telemetry.emit("db.query", &m, &BTreeMap::new());
    telemetry.emit("http.request", &m, &BTreeMap::new());
    assert_eq!(seen.load(Ordering::Relaxed), 1, "only the matching prefix");
    assert!(telemetry.detach(id));
    assert!(!telemetry.detach(id));
    telemetry.emit("db.query", &m, &BTreeMap::new());
    assert_eq!(seen.load(Ordering::Relaxed), 1, "detached");
    let text = telemetry.prometheus().render();
    assert!(text.contains("foundation_telemetry_events_total") && text.contains("db.query"), "{text}");
    // The node's event store saw the mesh come up.
    let ups = servers[1].events().query(&foundation::events::EventFilter { kind: Some("node.up".into()), ..Default::default() });
    assert!(!ups.is_empty());
}
