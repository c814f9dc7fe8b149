//! The nemeses of issue 12 and what they find.
//!
//! Exploration (`#[ignore]`d): `NEMESES=big_state CHAOS_SEEDS=20 cargo test
//! --release -p foundation-testkit --test nemeses explore -- --ignored
//! --nocapture` runs the Layer 4 scenario with only those nemeses and prints
//! every seed's checks.

use std::time::Duration;

use foundation_testkit::chaos::Nemesis;
use foundation_testkit::cluster::{Backend, ClusterSpec, cluster_size, run};
use foundation_testkit::scenario::{ChaosOutcome, ChaosRun, run_chaos};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn layer4(backend: Backend, seed: u64, faults: &[Nemesis], duration: Duration) -> Result<ChaosOutcome, String> {
    let mut chaos = ChaosRun::new(duration);
    chaos.faults = faults.to_vec();
    let mut spec = ClusterSpec::new(backend, cluster_size(), seed);
    spec.wall_limit = Some(chaos.wall_limit());
    run(&spec, move |cluster| async move { run_chaos(&cluster, &chaos).await }).map(|r| r.value).map_err(|e| e.to_string())
}

fn summary(o: &ChaosOutcome) -> String {
    format!(
        "{} ops {:.3}, {} faults ({} no effect) {:?}, locks {}/{} refused, services {} ops, {:?}, convergence {:?}, violations {:?}",
        o.workload.total(),
        o.workload.success_rate(),
        o.chaos.failures_injected(),
        o.chaos.no_effect(),
        o.chaos.by_kind(),
        o.locks.granted(),
        o.locks.refused(),
        o.services.total(),
        o.check.verdict,
        o.convergence,
        o.violations(),
    )
}

#[test]
#[ignore = "exploration: NEMESES=a,b CHAOS_SEEDS=n cargo test --release -p foundation-testkit --test nemeses explore -- --ignored --nocapture"]
fn explore() {
    let faults: Vec<Nemesis> = std::env::var("NEMESES")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a nemesis"))
        .collect();
    let faults = if faults.is_empty() { Nemesis::DEFAULT.to_vec() } else { faults };
    let backend = if std::env::var("BACKEND").as_deref() == Ok("inprocess") { Backend::InProcess } else { Backend::Simulated };
    let start = env_u64("CHAOS_SEED_START", 0);
    let seeds = env_u64("CHAOS_SEEDS", 10);
    let duration = Duration::from_secs(env_u64("CHAOS_SECS", 30));
    let mut failed = Vec::new();
    for seed in start..start + seeds {
        let wall = std::time::Instant::now();
        match layer4(backend, seed, &faults, duration) {
            Ok(o) => {
                let c = o.checks();
                eprintln!("seed {seed} ({:.2} s): {} {c:?}", wall.elapsed().as_secs_f64(), summary(&o));
                if !c.all() {
                    failed.push(seed);
                }
            }
            Err(e) => {
                eprintln!("seed {seed}: ERROR {e}");
                failed.push(seed);
            }
        }
    }
    eprintln!("failed seeds: {failed:?}");
}
