//! The stress tier (`#[ignore]`d here):
//!
//! ```text
//! cargo test --release -p foundation-testkit --test stress -- --ignored
//! ```
//!
//! Many clients with no pause between operations against a healthy
//! in-process cluster of `TEST_CLUSTER_SIZE` nodes for `STRESS_SECS`
//! (default 20) seconds: every operation must succeed and the history
//! must be linearizable.

use std::time::Duration;

use foundation_testkit::cluster::{ClusterSpec, run};
use foundation_testkit::linearizability::{Verdict, check};
use foundation_testkit::workload::KvWorkload;

#[test]
#[ignore = "stress tier: cargo test --release -p foundation-testkit --test stress -- --ignored"]
fn many_clients_flat_out_stay_linearizable() {
    let secs = std::env::var("STRESS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let spec = ClusterSpec::in_process(5);
    let run = run(&spec, move |cluster| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let w = KvWorkload { clients: 32, keys: 8, think: Duration::ZERO, ..KvWorkload::new(5, Duration::from_secs(secs)) };
        Ok(w.run(&cluster).await)
    })
    .expect("runs");
    let r = run.value;
    let ops = r.history.ops().expect("history parses");
    let started = std::time::Instant::now();
    let verdict = check(&ops);
    eprintln!(
        "{} ops in {secs} s ({:.0} ops/s), success {:.4}, p50 {:?} p99 {:?}; checked {} ops in {:?}",
        r.total(),
        r.total() as f64 / secs as f64,
        r.success_rate(),
        r.latency_quantile(0.5),
        r.latency_quantile(0.99),
        verdict.ops,
        started.elapsed()
    );
    assert_eq!(verdict.verdict, Verdict::Linearizable);
    assert!(r.success_rate() > 0.99, "success {}", r.success_rate());
}
