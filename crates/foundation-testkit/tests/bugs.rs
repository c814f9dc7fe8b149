//! The kit finds real bugs: built with a feature that makes the consensus
//! service wrong on purpose, the chaos tier's Layer 4 run must FAIL its
//! linearizability check within `BUG_SEEDS_MAX` simulated seeds.
//!
//! ```text
//! cargo test --release -p foundation-testkit --features bug-stale-reads --test bugs
//! cargo test --release -p foundation-testkit --features bug-early-ack --test bugs
//! ```
//!
//! Without either feature this file has no test (the chaos tier itself
//! checks that a correct build passes).

#![cfg(any(feature = "bug-stale-reads", feature = "bug-early-ack"))]

use std::time::Duration;

use foundation_testkit::cluster::{ClusterSpec, run};
use foundation_testkit::linearizability::Verdict;
use foundation_testkit::scenario::{ChaosRun, run_chaos};

/// Seeds tried before the kit is declared blind to the bug.
const BUG_SEEDS_MAX: u64 = 20;

#[test]
fn the_chaos_tier_fails_on_a_broken_consensus_service() {
    let bug = if cfg!(feature = "bug-stale-reads") { "bug-stale-reads" } else { "bug-early-ack" };
    for seed in 0..BUG_SEEDS_MAX {
        let spec = ClusterSpec::simulated(seed);
        let outcome = run(&spec, |cluster| async move { run_chaos(&cluster, &ChaosRun::new(Duration::from_secs(30))).await })
            .unwrap_or_else(|e| panic!("seed {seed}: the run itself broke: {e}"))
            .value;
        match &outcome.check.verdict {
            Verdict::NotLinearizable { key, failed, reason, .. } => {
                eprintln!("{bug}: seed {seed} fails: key {key}, {failed:?}: {reason}");
                assert!(!outcome.checks().all());
                return;
            }
            Verdict::Unknown { .. } => panic!("{bug}: seed {seed}: no verdict: {:?}", outcome.check.verdict),
            Verdict::Linearizable => eprintln!("{bug}: seed {seed} passes"),
        }
    }
    panic!("{bug}: no seed of {BUG_SEEDS_MAX} found the planted bug");
}
