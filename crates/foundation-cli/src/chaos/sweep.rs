//! `foundation chaos --backend sim --seeds N`: the same run over N seeds
//! (from `--seed`, 0 by default), in simulation, one after the other.
//! Every failing seed is printed as it fails, with what failed and the
//! command that replays it; the summary line comes last. Exit 0 when every
//! seed passed, 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;

use foundation_testkit::chaos::Nemesis;
use foundation_testkit::cluster::{Backend, ClusterSpec, run};
use foundation_testkit::scenario::{ChaosRun, Checks, run_chaos};
use serde::Serialize;

use super::{CLIENTS, ChaosArgs, replay_command};

/// One failing seed, as `--json` prints it.
#[derive(Serialize)]
struct Failure {
    seed: u64,
    /// The checks that failed, or the error that stopped the run.
    failed: Vec<String>,
    replay: String,
}

/// The names of the checks that failed.
fn failed_checks(c: &Checks) -> Vec<String> {
    let all = [
        ("success_rate", c.success_rate),
        ("failures_injected", c.failures_injected),
        ("linearizable", c.linearizable),
        ("converged", c.converged),
        ("locks", c.locks),
        ("services", c.services),
        ("probes", c.probes),
    ];
    all.iter().filter(|(_, ok)| !ok).map(|(name, _)| (*name).to_owned()).collect()
}

/// Runs one seed; the checks that failed (empty: it passed).
fn one(args: &ChaosArgs, seed: u64, faults: &[Nemesis]) -> Vec<String> {
    let duration = Duration::from_secs(args.duration);
    let mut spec = ClusterSpec::new(Backend::Simulated, args.nodes, seed);
    spec.sim_limit = duration * 4 + Duration::from_secs(300);
    let mut chaos = ChaosRun::new(duration);
    chaos.faults = faults.to_vec();
    chaos.clients = CLIENTS;
    chaos.think = Duration::from_secs_f64(CLIENTS as f64 / f64::from(args.rate));
    spec.wall_limit = Some(chaos.wall_limit());
    match run(&spec, move |cluster| async move { run_chaos(&cluster, &chaos).await }) {
        Ok(r) => {
            let mut failed = failed_checks(&r.value.checks());
            failed.extend(r.value.violations());
            failed
        }
        Err(e) => vec![format!("error: {e}")],
    }
}

/// Sweeps `seeds` seeds from `--seed` (0 by default).
pub(super) fn run_sweep(args: &ChaosArgs, seeds: u64, faults: &[Nemesis]) -> ExitCode {
    let start = args.seed.unwrap_or(0);
    let wall = std::time::Instant::now();
    let mut failures = Vec::new();
    for seed in start..start.saturating_add(seeds) {
        let failed = one(args, seed, faults);
        if failed.is_empty() {
            continue;
        }
        let replay = replay_command(args, seed, faults);
        if !args.json {
            println!("seed {seed} FAIL ({})\n  replay: {replay}", failed.join("; "));
        }
        failures.push(Failure { seed, failed, replay });
    }
    eprintln!("wall time {:.1} s for {seeds} seeds", wall.elapsed().as_secs_f64());
    let failing: Vec<u64> = failures.iter().map(|f| f.seed).collect();
    if args.json {
        let out = serde_json::json!({ "seeds": seeds, "from": start, "failed": failures });
        println!("{}", serde_json::to_string_pretty(&out).expect("the sweep serializes"));
    } else {
        println!("{seeds} seeds from {start}: {} failed {failing:?}", failures.len());
    }
    if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
