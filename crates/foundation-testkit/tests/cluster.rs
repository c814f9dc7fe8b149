//! The test kit's clusters, on both backends (the distributed tier).

use std::time::Duration;

use foundation_testkit::chaos::Nemesis;
use foundation_testkit::cluster::{Backend, ClusterSpec, run};
use foundation_testkit::linearizability::Verdict;
use foundation_testkit::scenario::{ChaosRun, run_chaos};
use foundation_testkit::telemetry::capture_telemetry;
use foundation_testkit::workload::KvWorkload;

fn short_chaos(backend: Backend, seed: u64) {
    let spec = ClusterSpec::new(backend, foundation_testkit::cluster::cluster_size(), seed);
    let outcome = run(&spec, |cluster| async move {
        let capture = capture_telemetry(cluster.telemetry(), "foundation.chaos.");
        let mut chaos = ChaosRun::new(Duration::from_secs(6));
        chaos.faults = vec![Nemesis::Partition, Nemesis::CrashRestart, Nemesis::KillProcess, Nemesis::MessageFlood];
        let o = run_chaos(&cluster, &chaos).await?;
        anyhow::Ok((o, capture.events(), cluster.faults()))
    })
    .expect("the run completes");
    let (o, events, faults) = &outcome.value;
    // The run's telemetry saw every fault and every injection, as logged.
    let injected: Vec<(String, f64)> = events
        .iter()
        .filter(|e| e.event == "foundation.chaos.injection")
        .map(|e| (e.metadata["nemesis"].clone(), e.measurements["at_us"]))
        .collect();
    let reported: Vec<(String, f64)> = o.chaos.injections.iter().map(|i| (i.nemesis.name().to_owned(), i.at_us as f64)).collect();
    assert_eq!(injected, reported);
    let applied: Vec<f64> = events.iter().filter(|e| e.event == "foundation.chaos.fault").map(|e| e.measurements["at_us"]).collect();
    assert_eq!(applied, faults.iter().map(|f| f.at_us as f64).collect::<Vec<_>>());
    eprintln!(
        "{backend} seed {seed}: {} ops ({} ok, {} failed, {} unknown), {} faults, {:?}, converged {:?}, wall {:?}, cluster {:?}",
        o.workload.total(),
        o.workload.ok(),
        o.workload.failed(),
        o.workload.unknown(),
        o.chaos.failures_injected(),
        o.check.verdict,
        o.convergence,
        outcome.wall_time,
        outcome.cluster_time
    );
    assert_eq!(o.check.verdict, Verdict::Linearizable);
    assert!(o.convergence.is_ok(), "{:?}", o.convergence);
    assert!(o.diverged_keys.is_empty(), "{:?}", o.diverged_keys);
    assert!(o.workload.ok() > 0);
    assert!(o.chaos.failures_injected() > 0, "{:?}", o.chaos.errors);
}

#[test]
fn simulated_cluster_stays_linearizable_under_faults() {
    short_chaos(Backend::Simulated, 1);
}

#[test]
fn in_process_cluster_stays_linearizable_under_faults() {
    short_chaos(Backend::InProcess, 1);
}

#[test]
fn a_simulated_workload_without_faults_only_succeeds() {
    let spec = ClusterSpec::simulated(7);
    let run = run(&spec, |cluster| async move {
        let w = KvWorkload::new(7, Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(w.run(&cluster).await)
    })
    .expect("runs");
    let r = &run.value;
    assert!(r.total() > 100, "{} ops", r.total());
    assert_eq!(
        r.failed() + r.unknown(),
        0,
        "{:?}",
        r.samples.iter().filter(|s| s.outcome != foundation_testkit::workload::Outcome::Ok).take(5).collect::<Vec<_>>()
    );
    assert!(run.cluster_time >= Duration::from_secs(5));
}

/// A simulated host's task that panics fails the run: it does not go on
/// with a node that lost whatever the task was doing.
#[test]
fn a_simulated_task_that_panics_fails_the_run() {
    let spec = ClusterSpec::new(Backend::Simulated, 1, 3);
    let outcome = run(&spec, |_cluster| async move {
        drop(foundation::rt::spawn(async { panic!("planted in a simulated task") }));
        foundation::rt::sleep(Duration::from_secs(1)).await;
        anyhow::Ok(())
    });
    match outcome {
        Err(foundation_testkit::cluster::RunError::TaskPanic(message)) => assert_eq!(message, "planted in a simulated task"),
        other => panic!("the run went on, or failed otherwise: {:?}", other.map(|_| ())),
    }
}
