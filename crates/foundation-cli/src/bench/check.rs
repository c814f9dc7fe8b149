//! Checker benches: a verdict on histories with a planted violation, and on
//! a large linearizable one (each simulated: 5 clients of a correct register
//! on 3 keys, 2% of the writes of unknown outcome; see
//! `foundation_testkit::linearizability::plant`).

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use foundation_testkit::linearizability::plant::{Plant, plant, simulate};
use foundation_testkit::linearizability::{Limits, Op, Verdict, check_with};

use super::{Bench, Harness, Sizes};

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: "check.planted_10k", unit: "ms", target: "<= 1000", run: planted_10k, warmup: true },
        Bench { name: "check.planted_10k_peak", unit: "MiB", target: "<= 256", run: planted_10k_peak, warmup: false },
        Bench { name: "check.planted_100k", unit: "ms", target: "<= 10000", run: planted_100k, warmup: false },
        Bench { name: "check.linearizable_100k", unit: "ms", target: "<= 10000", run: linearizable_100k, warmup: false },
    ]
}

/// A simulated history of `ops` operations with a stale read planted.
fn broken(ops: usize) -> anyhow::Result<Vec<Op>> {
    plant(&simulate(1, 5, 3, ops, 0.02), Plant::StaleRead, 1).context("no place to plant a stale read")
}

/// Milliseconds to a verdict on `ops`, which must be `expected`.
fn time_check(ops: &[Op], expect_linearizable: bool) -> anyhow::Result<f64> {
    let start = Instant::now();
    let result = check_with(ops, Limits::DEFAULT);
    let took = start.elapsed();
    ensure!(
        (result.verdict == Verdict::Linearizable) == expect_linearizable && !matches!(result.verdict, Verdict::Unknown { .. }),
        "unexpected verdict {:?}",
        result.verdict
    );
    Ok(took.as_secs_f64() * 1e3)
}

fn planted_10k(_sizes: &Sizes, _h: &Harness) -> anyhow::Result<f64> {
    time_check(&broken(10_000)?, false)
}

fn planted_100k(sizes: &Sizes, _h: &Harness) -> anyhow::Result<f64> {
    time_check(&broken(sizes.pick(100_000, 20_000))?, false)
}

fn linearizable_100k(sizes: &Sizes, _h: &Harness) -> anyhow::Result<f64> {
    time_check(&simulate(2, 5, 3, sizes.pick(100_000, 20_000), 0.02), true)
}

/// Peak resident memory growth of checking the planted 10k history,
/// measured in a fresh child process (`bench-probe check-peak`).
fn planted_10k_peak(_sizes: &Sizes, _h: &Harness) -> anyhow::Result<f64> {
    let exe = std::env::current_exe().context("locating the foundation binary")?;
    let out = std::process::Command::new(exe)
        .args(["bench-probe", "check-peak", "10000", "--workers", "1"])
        .output()
        .context("running the check probe")?;
    ensure!(out.status.success(), "the check probe failed: {}", String::from_utf8_lossy(&out.stderr));
    let bytes: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().context("the probe's figure")?;
    Ok(bytes / f64::from(1 << 20))
}

fn status_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} in /proc/self/status"))?;
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).with_context(|| format!("reading {line:?}"))
}

/// The probe: peak resident growth (bytes) while checking a planted
/// history of `n` operations. The history is built first; the kernel's
/// peak counter is then reset (`clear_refs` 5), so the figure is the
/// check's own.
pub fn check_peak_probe(n: usize) -> anyhow::Result<f64> {
    let ops = broken(n)?;
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak resident counter")?;
    let before = status_kib("VmRSS:")?;
    let result = check_with(&ops, Limits { memory_bytes: 1 << 30, time: Duration::from_secs(600) });
    ensure!(matches!(result.verdict, Verdict::NotLinearizable { .. }), "unexpected verdict {:?}", result.verdict);
    let peak = status_kib("VmHWM:")?;
    Ok((peak.saturating_sub(before) * 1024) as f64)
}
