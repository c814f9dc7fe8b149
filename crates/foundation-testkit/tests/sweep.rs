//! The sweep tier: the seed's Layer 4 over many simulated seeds (1,000 by
//! default), the default nemeses, on `TEST_CLUSTER_SIZE` nodes (3), split
//! over the machine's cores (each run is one thread: the simulator steps on
//! the thread that calls it). Its own tier:
//!
//! ```text
//! cargo test --release -p foundation-testkit --test sweep -- --ignored --nocapture
//! ```
//!
//! `SWEEP_SEEDS` (default 1000) seeds from `SWEEP_SEED_START` (default
//! 100_000, past the chaos tier's 0..100); `SWEEP_THREADS` (default: the
//! cores). Every failing seed is printed with the command that replays it;
//! the test fails if any did.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use foundation_testkit::cluster::{Backend, ClusterSpec, cluster_size, run};
use foundation_testkit::scenario::{ChaosRun, run_chaos};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn replay(seed: u64) -> String {
    format!("foundation chaos --backend sim --seed {seed} --nodes {} --duration 30 --rate 500", cluster_size())
}

/// One seed's verdict: `None` when every check passed.
fn one(seed: u64) -> Option<String> {
    let chaos = ChaosRun::new(Duration::from_secs(30));
    let mut spec = ClusterSpec::new(Backend::Simulated, cluster_size(), seed);
    spec.wall_limit = Some(chaos.wall_limit());
    match run(&spec, move |cluster| async move { run_chaos(&cluster, &chaos).await }) {
        Ok(r) if r.value.checks().all() => None,
        Ok(r) => Some(format!("{:?} {:?}", r.value.checks(), r.value.violations())),
        Err(e) => Some(e.to_string()),
    }
}

#[test]
#[ignore = "sweep tier: cargo test --release -p foundation-testkit --test sweep -- --ignored --nocapture"]
fn layer4_simulated_sweep() {
    let start = env_u64("SWEEP_SEED_START", 100_000);
    let seeds = env_u64("SWEEP_SEEDS", 1_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let threads = env_u64("SWEEP_THREADS", cores).max(1);
    let next = AtomicU64::new(start);
    let failed: Mutex<Vec<(u64, String)>> = Mutex::default();
    let wall = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= start + seeds {
                        return;
                    }
                    if let Some(why) = one(seed) {
                        eprintln!("seed {seed} FAILED: {why}\n  replay: {}", replay(seed));
                        failed.lock().expect("not poisoned").push((seed, why));
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().expect("not poisoned");
    failed.sort();
    eprintln!(
        "{seeds} seeds from {start} on {} nodes, {threads} threads: {} failed, wall time {:.1} s",
        cluster_size(),
        failed.len(),
        wall.elapsed().as_secs_f64()
    );
    let seeds: Vec<u64> = failed.iter().map(|f| f.0).collect();
    assert!(failed.is_empty(), "failing seeds {seeds:?}; replay one with: {}", replay(seeds[0]));
}
