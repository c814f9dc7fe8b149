//! The cluster services on three in-process node servers: Config (validated,
//! consensus-backed, subscribable), Registry (cluster-wide names that go
//! with their process), Telemetry (attach/emit/detach and Prometheus), and
//! the node's event store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use foundation_cluster::server::{Server, ServerConfig, Service};
use foundation_cluster::services::{ConfigError, RegistryError};
use serde_json::json;

mod common;
use common::{free_ports, secret, until, until_within};

const T: Duration = Duration::from_secs(5);

async fn three_servers() -> Vec<Server> {
    let ports = free_ports(3);
    let mut servers = Vec::new();
    for i in 0..3 {
        let config = common::member("s", i, &ports, "services");
        servers.push(Server::start(config).await.expect("starts"));
    }
    for s in &servers {
        until("operational", || s.consensus().expect("consensus runs").status().operational).await;
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_is_validated_committed_and_followed_cluster_wide() {
    let servers = three_servers().await;
    for s in &servers {
        s.config().expect("config runs").validate("limits/", |v| match v.as_i64() {
            Some(n) if n >= 0 => Ok(()),
            _ => Err("a limit is a non-negative integer".into()),
        });
    }
    let mut follow = servers[2].config().expect("config runs").subscribe("limits/connections").await.expect("subscribed");
    assert_eq!(*follow.borrow(), None);
    let err = servers[0].config().expect("config runs").update("limits/connections", json!(-5), T).await.expect_err("invalid");
    assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "limits/connections"), "{err}");
    assert!(matches!(servers[0].config().expect("config runs").update("", json!(1), T).await, Err(ConfigError::BadKey(_))));
    servers[1].config().expect("config runs").update("limits/connections", json!(100), T).await.expect("valid");
    assert_eq!(servers[2].config().expect("config runs").get("limits/connections", T).await, Ok(Some(json!(100))));
    tokio::time::timeout(T, follow.wait_for(|v| *v == Some(json!(100)))).await.expect("in time").expect("open");
    servers[0].config().expect("config runs").update("limits/connections", json!(200), T).await.expect("valid");
    tokio::time::timeout(T, follow.wait_for(|v| *v == Some(json!(200)))).await.expect("in time").expect("open");
    // Values outside any validated prefix are free-form.
    servers[0].config().expect("config runs").update("name", json!({"display": "demo"}), T).await.expect("stored");
    assert_eq!(servers[1].config().expect("config runs").get("name", T).await, Ok(Some(json!({"display": "demo"}))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_names_are_cluster_wide_and_leave_with_their_process() {
    let servers = three_servers().await;
    let node = servers[0].cluster().node().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = node.spawn(move |_ctx: foundation::Ctx<()>| async move {
        let _ = stopped.await;
    });
    servers[0].registry().expect("registry runs").register("worker", worker.pid(), T).await.expect("registered");
    assert_eq!(servers[2].registry().expect("registry runs").whereis("worker", T).await, Ok(Some(worker.pid())));
    let other = servers[1].cluster().node().spawn(|mut ctx: foundation::Ctx<()>| async move { ctx.recv().await });
    let taken = servers[1].registry().expect("registry runs").register("worker", other.pid(), T).await;
    assert_eq!(taken, Err(RegistryError::Taken { name: "worker".into(), pid: worker.pid() }));
    // The process ends: its name goes.
    let _ = stop.send(());
    let deadline = tokio::time::Instant::now() + T;
    while servers[1].registry().expect("registry runs").whereis("worker", T).await != Ok(None) {
        assert!(tokio::time::Instant::now() < deadline, "the name outlived its process");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    servers[1].registry().expect("registry runs").register("worker", other.pid(), T).await.expect("free again");
    assert!(servers[1].registry().expect("registry runs").unregister("worker", other.pid(), T).await.expect("decided"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_handlers_attach_and_detach_and_events_are_recorded() {
    let servers = three_servers().await;
    let telemetry = servers[0].telemetry().expect("telemetry runs");
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
    let ups = servers[1]
        .events()
        .expect("events runs")
        .query(&foundation::events::EventFilter { kind: Some("node.up".into()), ..Default::default() });
    assert!(!ups.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_distributed_cluster_runs_the_requested_services_only() {
    use foundation_cluster::server::{DistributedConfig, start_distributed_cluster};
    let requested = [Service::Consensus, Service::Coordination, Service::Events];
    let cluster = start_distributed_cluster(DistributedConfig {
        nodes: 3,
        services: requested.into_iter().collect(),
        secret: secret(),
        data_dir: None,
        lan: false,
        http: true,
    })
    .await
    .expect("starts");
    cluster.wait_operational(T).await.expect("operational");
    for s in cluster.servers() {
        assert_eq!(s.services(), requested.into_iter().collect());
        assert!(s.config().is_none() && s.telemetry().is_none() && s.registry().is_none());
        // Not running: the API says so, as JSON.
        let (code, body) =
            foundation_cluster::admin::client::request(s.http_addr().expect("http"), cluster.admin_token(), "GET", "/metrics", b"")
                .await
                .expect("answers");
        assert_eq!(code, 404);
        assert!(body.contains("service_not_running"), "{body}");
    }
    let d = cluster.servers()[1]
        .consensus()
        .expect("runs")
        .reach_consensus(foundation_cluster::consensus::Command::Put { key: "k".into(), value: b"v".to_vec() }, T)
        .await;
    assert!(d.expect("committed").term > 0);
    cluster.shutdown().await;
    // A service that needs consensus, without it: refused.
    let refused = start_distributed_cluster(DistributedConfig {
        nodes: 1,
        services: [Service::Config].into_iter().collect(),
        secret: secret(),
        data_dir: None,
        lan: false,
        http: false,
    })
    .await;
    assert!(matches!(refused, Err(foundation_cluster::server::ServerError::Config(_))));
}

/// What a telemetry handler saw: the event, its measurements, its metadata.
type Seen = Arc<parking_lot::Mutex<Vec<(String, BTreeMap<String, f64>, BTreeMap<String, String>)>>>;

fn capture(server: &Server) -> Seen {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    server.telemetry().expect("telemetry runs").attach("foundation.", move |event, m, meta| {
        sink.lock().push((event.to_owned(), m.clone(), meta.clone()));
    });
    seen
}

/// The framework's own events reach the Telemetry service: when the
/// leader's node stops, the others see it go down (with the reason) and a
/// new leader in a later term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_framework_reports_nodes_going_down_and_leaders_through_telemetry() {
    let servers = three_servers().await;
    let seen: Vec<Seen> = servers.iter().map(capture).collect();
    let leader_term = |s: &Seen| -> Option<(String, f64)> {
        let seen = s.lock();
        let (_, m, meta) =
            seen.iter().rev().find(|(e, _, meta)| e == "foundation.consensus.leader" && meta.get("leader").is_some_and(|l| l != "none"))?;
        Some((meta["leader"].clone(), *m.get("term")?))
    };
    let status = servers[0].consensus().expect("consensus runs").status();
    let (old, term) = (status.leader.expect("a leader"), status.term as f64);
    let li = servers.iter().position(|s| s.cluster().name() == old).expect("the leader is one of the three");
    servers[li].shutdown().await;
    for (_, s) in seen.iter().enumerate().filter(|(i, _)| *i != li) {
        until("the others see the leader's node go down, with a reason", || {
            s.lock().iter().any(|(e, _, meta)| {
                e == "foundation.node.down" && meta.get("node") == Some(&old) && meta.get("reason").is_some_and(|r| !r.is_empty())
            })
        })
        .await;
        until("and a new leader in a later term", || leader_term(s).is_some_and(|(l, t)| l != old && t > term)).await;
    }
    // Commits are timed: a histogram in the node's Prometheus text.
    let survivor = servers.iter().position(|s| s.cluster().name() != old).expect("a survivor");
    let consensus = servers[survivor].consensus().expect("consensus runs");
    let put = foundation_cluster::consensus::Command::Put { key: "timed".into(), value: b"x".to_vec() };
    consensus.reach_consensus(put, T).await.expect("commits with two of three");
    let text = servers[survivor].telemetry().expect("telemetry runs").prometheus().render();
    let count = text.lines().find_map(|l| l.strip_prefix(r#"foundation_consensus_commit_seconds_count{outcome="committed"} "#));
    assert!(count.is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n >= 1)), "{text}");
    // So are RPCs, by name and outcome; names past the bound share `other`.
    let cluster = servers[survivor].cluster();
    let down: Result<(), _> = cluster.rpc::<(), ()>(&old, "raft.vote", (), T).await;
    assert!(down.is_err(), "the stopped node answered");
    for i in 0..foundation_cluster::rpc::RPC_NAMES_TIMED + 8 {
        let _ = cluster.rpc::<(), ()>(cluster.name(), &format!("no-such-{i}"), (), T).await;
    }
    let text = servers[survivor].telemetry().expect("telemetry runs").prometheus().render();
    let rpc_series: Vec<&str> = text.lines().filter(|l| l.starts_with("foundation_rpc_seconds_count{")).collect();
    assert!(rpc_series.iter().any(|l| l.contains(r#"name="raft.vote""#) && l.contains(r#"outcome="no_connection""#)), "{text}");
    assert!(rpc_series.iter().any(|l| l.contains(r#"name="other""#) && l.contains(r#"outcome="unknown_handler""#)), "{text}");
    assert!(rpc_series.len() <= foundation_cluster::rpc::RPC_NAMES_TIMED * 9 + 9, "{} series", rpc_series.len());
}

/// Snapshots are reported as they are built (on every member), sent (by
/// the leader, to a member whose log it no longer has) and installed (by
/// that member): `foundation.consensus.snapshot_build`, `_send`,
/// `_install`, counted in each node's Prometheus text too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_reported_built_sent_and_installed() {
    let ports = free_ports(3);
    let config = |i: usize| ServerConfig {
        snapshots: foundation_cluster::server::SnapshotSettings { log_bytes: None, logs_kept: Some(5) },
        ..common::member("n", i, &ports, "snapshots")
    };
    // Two of three: a quorum, and a third member that is behind from the start.
    let first = [Server::start(config(0)).await.expect("starts"), Server::start(config(1)).await.expect("starts")];
    let seen: Vec<Seen> = first.iter().map(capture).collect();
    let consensus = first[0].consensus().expect("consensus runs").clone();
    let (_, leader) = consensus.wait_for_leader(Duration::from_secs(30)).await.expect("a leader of two");
    for i in 0..50 {
        let put = foundation_cluster::consensus::Command::Put { key: format!("k{i}"), value: vec![b'v'; 100] };
        consensus.reach_consensus(put, T).await.expect("commits with two of three");
    }
    let li = first.iter().position(|s| s.cluster().name() == leader.name).expect("the leader is one of the two");
    first[li].consensus().expect("consensus runs").snapshot().await.expect("a snapshot");
    until("the leader reports its snapshot built", || {
        seen[li].lock().iter().any(|(e, m, meta)| {
            e == "foundation.consensus.snapshot_build" && meta.get("outcome").is_some_and(|o| o == "built") && m["index"] >= 50.0
        })
    })
    .await;
    let third = Server::start(config(2)).await.expect("starts");
    until_within("the leader reports the snapshot sent to the third member", Duration::from_secs(30), || {
        seen[li].lock().iter().any(|(e, m, meta)| {
            e == "foundation.consensus.snapshot_send"
                && meta.get("follower").is_some_and(|f| f == "n3")
                && meta.get("outcome").is_some_and(|o| o == "sent")
                && m["bytes"] > 0.0
        })
    })
    .await;
    // The third member's own count (it attached nothing: its Prometheus
    // text counts every event it emitted).
    let installed = || {
        let text = third.telemetry().expect("telemetry runs").prometheus().render();
        text.lines().any(|l| l.starts_with("foundation_telemetry_events_total{") && l.contains("foundation.consensus.snapshot_install"))
    };
    until_within("the third member reports the snapshot installed", Duration::from_secs(30), installed).await;
    for s in first.iter().chain([&third]) {
        s.shutdown().await;
    }
}
