//! The test kit's process backend: every node a `foundation node` OS
//! process with a data directory, under partitions, SIGKILL, SIGSTOP and
//! the agent's nemeses.

use std::path::PathBuf;
use std::time::Duration;

use foundation_cluster::consensus::{CLIENT_SUBMIT, Command, ConsensusError, Decision};
use foundation_testkit::chaos::Nemesis;
use foundation_testkit::cluster::{Backend, ClusterSpec, TlsFiles, cluster_size, run};
use foundation_testkit::linearizability::Verdict;
use foundation_testkit::scenario::{ChaosRun, run_chaos};

fn spec(seed: u64) -> ClusterSpec {
    let mut spec = ClusterSpec::new(Backend::Processes, cluster_size(), seed);
    spec.binary = Some(PathBuf::from(env!("CARGO_BIN_EXE_foundation")));
    spec
}

#[test]
fn a_cluster_of_os_processes_stays_linearizable_under_faults() {
    let outcome = run(&spec(3), |cluster| async move {
        let mut chaos = ChaosRun::new(Duration::from_secs(8));
        chaos.faults = vec![Nemesis::Partition, Nemesis::CrashRestart, Nemesis::KillProcess, Nemesis::CpuSpike, Nemesis::SwizzleClog];
        run_chaos(&cluster, &chaos).await
    })
    .expect("the run completes");
    let o = &outcome.value;
    eprintln!(
        "processes: {} ops ({} ok), {} faults {:?} errors {:?}, {:?}, converged {:?}, wall {:?}",
        o.workload.total(),
        o.workload.ok(),
        o.chaos.failures_injected(),
        o.chaos.by_kind(),
        o.chaos.errors,
        o.check.verdict,
        o.convergence,
        outcome.wall_time
    );
    assert_eq!(o.check.verdict, Verdict::Linearizable);
    assert!(o.convergence.is_ok(), "{:?}", o.convergence);
    assert!(o.diverged_keys.is_empty());
    assert!(o.workload.ok() > 0);
    assert!(o.chaos.failures_injected() > 0);
}

#[test]
fn a_paused_process_loses_its_quorum_and_comes_back() {
    run(&spec(4), |cluster| async move {
        cluster.converged(Duration::from_secs(20)).await.map_err(anyhow::Error::msg)?;
        cluster.pause(0).await?;
        // The others carry on without it.
        let (index, _) = cluster.local_state(1, Duration::from_secs(2)).await.map_err(anyhow::Error::msg)?;
        anyhow::ensure!(cluster.local_state(0, Duration::from_millis(500)).await.is_err(), "a stopped process answers");
        cluster.resume(0).await?;
        let (_, state) = cluster.converged(Duration::from_secs(20)).await.map_err(anyhow::Error::msg)?;
        anyhow::ensure!(index.is_some(), "node 2 applied entries");
        drop(state);
        Ok(())
    })
    .expect("pause and resume");
}

/// Three nodes with mutual TLS (the cluster crate's test certificates)
/// commit writes through each of them; a node without TLS that dials one
/// of them is refused, again and again, and never becomes a peer.
#[test]
fn a_tls_cluster_of_processes_commits_and_refuses_a_node_without_tls() {
    let mut spec = ClusterSpec::new(Backend::Processes, 3, 5);
    spec.binary = Some(PathBuf::from(env!("CARGO_BIN_EXE_foundation")));
    spec.tls = Some(TlsFiles::in_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../foundation-cluster/tests/tls")));
    run(&spec, |cluster| async move {
        cluster.converged(Duration::from_secs(30)).await.map_err(anyhow::Error::msg)?;
        for (i, name) in cluster.names().iter().enumerate() {
            let put = Command::Put { key: format!("tls-{i}"), value: b"over TLS".to_vec() };
            let wait = Duration::from_secs(10);
            let decided: Result<Decision, ConsensusError> = cluster.client().rpc(name, CLIENT_SUBMIT, (put, wait), 2 * wait).await?;
            anyhow::ensure!(decided?.committed, "a write through {name} commits");
        }
        let (_, state) = cluster.converged(Duration::from_secs(30)).await.map_err(anyhow::Error::msg)?;
        let state = format!("{state:?}");
        anyhow::ensure!((0..3).all(|i| state.contains(&format!("tls-{i}"))), "every write is in the converged state: {state}");
        // A node without TLS, with the right secret, dials node1.
        let addr = cluster.addr(0).ok_or_else(|| anyhow::anyhow!("the process backend knows its addresses"))?;
        let dir = std::env::temp_dir().join(format!("foundation-processes-plain-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("plain.log");
        let port = foundation_testkit::cluster::free_ports(1)?[0];
        let mut plain = tokio::process::Command::new(env!("CARGO_BIN_EXE_foundation"))
            .args(["node", "--name", "plain", "--id", "9", "--listen", &format!("127.0.0.1:{port}"), "--services", "events"])
            .args(["--peer", &format!("1=node1@{addr}")])
            .env("FOUNDATION_SECRET", "foundation-testkit-cluster-secret")
            .env("RUST_LOG", "foundation_cluster=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        let refusals =
            || std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains("peer not reachable yet")).count();
        foundation_testkit::assert_eventually("the plain node is refused three times", || refusals() >= 3, Duration::from_secs(30)).await;
        let joined = cluster.client().peers().contains(&"plain".to_owned());
        plain.start_kill()?;
        let _ = plain.wait().await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        anyhow::ensure!(!joined, "a node without TLS joined the mesh:\n{text}");
        Ok(())
    })
    .expect("a TLS cluster of processes");
}

/// `foundation node --otlp-endpoint`: three node processes and the test's
/// client export to a collector the test runs; a write asked of each node
/// arrives as one trace whose spans come from the client, the node asked
/// and (for a follower) the leader, every parent link inside the trace.
#[test]
fn node_processes_export_each_request_as_one_trace() {
    let collector_rt = tokio::runtime::Runtime::new().expect("a runtime");
    let collector = collector_rt.block_on(foundation_testkit::otlp::Collector::start()).expect("a collector");
    let mut spec = spec(8);
    spec.otlp_endpoint = Some(collector.endpoint());
    let spans = std::sync::Arc::new(collector);
    let seen = spans.clone();
    run(&spec, move |cluster| async move {
        cluster.converged(Duration::from_secs(20)).await.map_err(anyhow::Error::msg)?;
        let wait = Duration::from_secs(5);
        for (i, name) in cluster.names().iter().enumerate() {
            let put = Command::Put { key: format!("traced-{i}"), value: b"v".to_vec() };
            let decided: Result<Decision, ConsensusError> =
                cluster.traced(cluster.client().rpc(name, CLIENT_SUBMIT, (put, wait), 2 * wait)).await?;
            decided?;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            cluster.client().traces().expect("the client exports").flush().await;
            let all = seen.spans();
            let mut traces: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
            for s in &all {
                traces.entry(s.trace_id.as_str()).or_default().push(s);
            }
            // A trace through a follower: client, follower and leader.
            let across = traces.values().find(|spans| {
                let nodes: std::collections::BTreeSet<_> = spans.iter().filter_map(|s| s.attr("foundation.node")).collect();
                nodes.len() == 3 && spans.iter().any(|s| s.name == "raft.client_write")
            });
            if let Some(spans) = across {
                let ids: std::collections::BTreeSet<_> = spans.iter().map(|s| s.span_id.as_str()).collect();
                let roots: Vec<_> = spans.iter().filter(|s| !s.parent_span_id.as_deref().is_some_and(|p| ids.contains(p))).collect();
                anyhow::ensure!(
                    roots.len() == 1 && roots[0].attr("foundation.node") == Some("client"),
                    "one root, the client's: {spans:#?}"
                );
                anyhow::ensure!(spans.iter().all(|s| s.error.is_none()), "{spans:#?}");
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "no trace crossed three members: {all:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .expect("the run completes");
    assert_eq!(spans.bad_requests(), 0);
}
