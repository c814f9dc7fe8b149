//! The seed's Layer 4 chaos test, and determinism of simulated runs.
//!
//! The chaos tier (`#[ignore]`d here, run by `.ci/run`):
//!
//! ```text
//! cargo test --release -p foundation-testkit --test chaos -- --ignored
//! ```
//!
//! `CHAOS_SEEDS` (default 100) seeds from `CHAOS_SEED_START` (default 0),
//! on `TEST_CLUSTER_SIZE` nodes (default 3). A failing seed is printed with
//! the command that replays it.

use std::time::Duration;

use foundation_testkit::chaos::Nemesis;
use foundation_testkit::cluster::{Backend, ClusterSpec, cluster_size, run};
use foundation_testkit::scenario::{ChaosOutcome, ChaosRun, run_chaos};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn layer4(backend: Backend, seed: u64, duration: Duration) -> (ChaosOutcome, Duration, Duration) {
    let chaos = ChaosRun::new(duration);
    let mut spec = ClusterSpec::new(backend, cluster_size(), seed);
    spec.wall_limit = Some(chaos.wall_limit());
    let run = run(&spec, move |cluster| async move { run_chaos(&cluster, &chaos).await })
        .unwrap_or_else(|e| panic!("{backend} seed {seed}: {e}\nreplay: {}", replay(seed)));
    (run.value, run.cluster_time, run.wall_time)
}

fn replay(seed: u64) -> String {
    format!(
        "TEST_CLUSTER_SIZE={} CHAOS_SEED_START={seed} CHAOS_SEEDS=1 cargo test --release -p foundation-testkit --test chaos -- --ignored layer4_simulated",
        cluster_size()
    )
}

fn summary(o: &ChaosOutcome) -> String {
    format!(
        "{} ops, success {:.3}, {} faults ({} no effect) {:?}, locks {} granted, {} service ops, p50 {:?} p99 {:?}, {:?}, convergence {:?}, diverged {:?}, violations {:?}",
        o.workload.total(),
        o.workload.success_rate(),
        o.chaos.failures_injected(),
        o.chaos.no_effect(),
        o.chaos.by_kind(),
        o.locks.granted(),
        o.services.total(),
        o.workload.latency_quantile(0.5),
        o.workload.latency_quantile(0.99),
        o.check.verdict,
        o.convergence,
        o.diverged_keys,
        o.violations(),
    )
}

/// The seed's Layer 4 over many seeds, 30 s of simulated time each, with
/// the default nemeses (`Nemesis::DEFAULT`) and every workload.
#[test]
#[ignore = "chaos tier: cargo test --release -p foundation-testkit --test chaos -- --ignored"]
fn layer4_simulated_over_seeds() {
    let start = env_u64("CHAOS_SEED_START", 0);
    let seeds = env_u64("CHAOS_SEEDS", 100);
    let mut failed = Vec::new();
    let mut slowest = Duration::ZERO;
    for seed in start..start + seeds {
        let (o, sim, wall) = layer4(Backend::Simulated, seed, Duration::from_secs(30));
        slowest = slowest.max(wall);
        let checks = o.checks();
        eprintln!("seed {seed}: sim {sim:?} wall {wall:?}: {} {checks:?}", summary(&o));
        if !checks.all() {
            eprintln!("seed {seed} FAILED; replay: {}", replay(seed));
            failed.push(seed);
        }
    }
    eprintln!("{seeds} seeds, slowest wall time {slowest:?}");
    assert!(failed.is_empty(), "failing seeds: {failed:?}; replay one with: {}", replay(failed[0]));
}

/// Layer 4 once on real nodes in this process, 30 s of real time.
#[test]
#[ignore = "chaos tier: cargo test --release -p foundation-testkit --test chaos -- --ignored"]
fn layer4_in_process() {
    let seed = env_u64("CHAOS_SEED_START", 0);
    let (o, _, wall) = layer4(Backend::InProcess, seed, Duration::from_secs(30));
    eprintln!("in-process seed {seed}: wall {wall:?}: {}", summary(&o));
    if !o.checks().all() {
        dump(&o);
    }
    assert!(o.checks().all(), "{:?}: {}", o.checks(), summary(&o));
}

/// A failed real-time run cannot be replayed: its faults (in cluster
/// time) and its lock calls (in workload time, `workload_start_us` later)
/// go to stderr.
fn dump(o: &ChaosOutcome) {
    eprintln!("workload started at {:.3} s of cluster time", o.workload_start_us as f64 / 1e6);
    for i in &o.chaos.injections {
        eprintln!("  {:>8.3} s +{:.3} s {} {}", i.at_us as f64 / 1e6, i.held_us as f64 / 1e6, i.nemesis, i.detail);
    }
    for e in &o.locks.events {
        eprintln!("  lock {}", serde_json::to_string(e).unwrap_or_default());
    }
}

/// What a simulated run did, as text: the history, the faults and the
/// monkey's log, all in virtual time.
fn trace(seed: u64) -> String {
    let spec = ClusterSpec::new(Backend::Simulated, 3, seed);
    let run = run(&spec, |cluster| async move {
        let mut chaos = ChaosRun::new(Duration::from_secs(5));
        chaos.faults = Nemesis::ALL.to_vec();
        run_chaos(&cluster, &chaos).await
    })
    .expect("runs");
    let o = run.value;
    format!(
        "{}\n{}\n{}",
        o.workload.history.to_jsonl(),
        serde_json::to_string(&o.faults).expect("faults serialize"),
        serde_json::to_string(&o.chaos).expect("chaos serializes")
    )
}

#[test]
fn a_seed_replays_byte_for_byte_and_another_seed_differs() {
    let a = trace(11);
    let b = trace(11);
    assert!(a.len() > 1000, "a real trace: {} bytes", a.len());
    if a != b {
        let line = a.lines().zip(b.lines()).position(|(x, y)| x != y);
        let show = |t: &str| line.and_then(|l| t.lines().nth(l)).unwrap_or_default().chars().take(400).collect::<String>();
        panic!("seed 11 ran differently twice; first difference at line {line:?}:\n{}\n{}", show(&a), show(&b));
    }
    assert_ne!(a, trace(12), "another seed, another run");
}

/// Every `tokio::select!` in Foundation's sources is `biased;`: an unbiased
/// one picks its first branch from tokio's RNG, which replays alike only
/// while tokio is seeded, and only `--cfg tokio_unstable` seeds it (the
/// workspace does not set it). Biased, a select polls in the order
/// written, under any build.
#[test]
fn every_select_in_the_sources_is_biased() {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    let mut dirs = vec![crates];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() && !path.ends_with("target") && !path.ends_with("tests") {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut selects = 0;
    let mut unbiased = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains("select! {") {
                selects += 1;
                if lines.get(i + 1).map(|next| next.trim()) != Some("biased;") {
                    unbiased.push(format!("{}:{}", file.display(), i + 1));
                }
            }
        }
    }
    assert!(selects >= 10, "the scan found Foundation's selects ({selects})");
    assert!(unbiased.is_empty(), "unbiased selects (add `biased;` and order the branches): {unbiased:#?}");
}
