//! A complete test written with the test kit: a simulated 3-node cluster
//! with every service, a partition that isolates the leader's side, a
//! crash, the KV workload beside the chaos monkey, and the checks.
//!
//! It is a cargo example built as a test (`test = true` in Cargo.toml):
//! `cargo test -p foundation-testkit --example cluster_test`. Copy it into
//! your own crate's `tests/` with `foundation-testkit` as a dev-dependency.

fn main() {
    eprintln!("run me as a test: cargo test -p foundation-testkit --example cluster_test");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use foundation_testkit::chaos::Nemesis;
    use foundation_testkit::cluster::{Backend, ClusterSpec, run};
    use foundation_testkit::linearizability::{Verdict, check};
    use foundation_testkit::scenario::{ChaosRun, run_chaos};
    use foundation_testkit::workload::KvWorkload;

    /// Faults by hand: isolate node 0, write through the others, heal, and
    /// the cluster agrees again.
    #[test]
    fn a_minority_partition_heals_and_the_cluster_converges() {
        let spec = ClusterSpec::new(Backend::Simulated, 3, 42);
        let run = run(&spec, |cluster| async move {
            cluster.converged(Duration::from_secs(10)).await.map_err(anyhow::Error::msg)?;
            cluster.isolate(0).await?;
            // Five seconds of the KV workload while node 0 is cut off.
            let report = KvWorkload::new(42, Duration::from_secs(5)).run(&cluster).await;
            cluster.heal().await?;
            // Node 0 catches up: every node holds the same state again.
            let (_, state) = cluster.converged(Duration::from_secs(10)).await.map_err(anyhow::Error::msg)?;
            Ok((report, state, cluster.faults().len()))
        })
        .expect("the run completes");
        let (report, state, faults) = run.value;
        assert!(report.ok() > 0, "the majority side kept serving");
        assert_eq!(check(&report.history.ops().expect("a valid history")).verdict, Verdict::Linearizable);
        for key in ["k0", "k1", "k2"] {
            assert!(state.kv.contains_key(key), "the writes to {key} reached every node");
        }
        assert_eq!(faults, 2, "the partition and the heal, both logged");
    }

    /// The seed's Layer 4, shortened: a chaos monkey with a few nemeses beside
    /// the workloads, then every check.
    #[test]
    fn the_cluster_survives_a_chaos_monkey() {
        let spec = ClusterSpec::new(Backend::Simulated, 3, 7);
        let run = run(&spec, |cluster| async move {
            let mut chaos = ChaosRun::new(Duration::from_secs(15));
            chaos.faults = vec![Nemesis::Partition, Nemesis::CrashRestart, Nemesis::KillProcess, Nemesis::SwizzleClog];
            run_chaos(&cluster, &chaos).await
        })
        .expect("the run completes");
        let checks = run.value.checks();
        assert!(checks.all(), "{checks:?}");
    }
}
