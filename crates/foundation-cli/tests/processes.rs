//! The test kit's process backend: every node a `foundation node` OS
//! process with a data directory, under partitions, SIGKILL, SIGSTOP and
//! the agent's nemeses.

use std::path::PathBuf;
use std::time::Duration;

use foundation_testkit::chaos::Nemesis;
use foundation_testkit::cluster::{Backend, ClusterSpec, cluster_size, run};
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
