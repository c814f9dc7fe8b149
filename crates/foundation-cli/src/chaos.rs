//! `foundation chaos`: the seed's Layer 4 on a local cluster, with a
//! report. Exit 0 when every check passes, 1 when one fails (or the run
//! breaks), 2 on bad input, 130 when interrupted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use foundation_testkit::chaos::Nemesis;
use foundation_testkit::cluster::{Backend, ClusterSpec, RunError, run};
use foundation_testkit::linearizability::Verdict;
use foundation_testkit::scenario::{ChaosOutcome, ChaosRun, Checks, run_chaos};
use serde::Serialize;

mod counts;
mod observe;
mod progress;
mod report;
mod sweep;
pub(crate) mod timeline;

/// Where the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Simulated (turmoil): deterministic from the seed, in virtual time.
    Sim,
    /// Real nodes on loopback in this process.
    Inprocess,
    /// `foundation node` OS processes, each with a data directory.
    Processes,
}

/// Options of `foundation chaos`.
#[derive(Args, Debug)]
pub struct ChaosArgs {
    /// Cluster size (1..=9).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How long the workload and the chaos run, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// The seed (random when not given; printed, with the command that
    /// replays it).
    #[arg(long)]
    seed: Option<u64>,
    /// Sweep this many seeds, from --seed (0 when not given), in
    /// simulation (--backend sim): each failing seed is printed with the
    /// command that replays it.
    #[arg(long)]
    seeds: Option<u64>,
    /// Target KV operations per second, across the workload's clients.
    #[arg(long, default_value_t = 250)]
    rate: u32,
    /// Where the nodes run.
    #[arg(long, value_enum, default_value = "inprocess")]
    backend: BackendArg,
    /// The nemeses, comma-separated (default: the default mix, every
    /// nemesis that finds no known bug): kill_process, partition,
    /// memory_pressure, cpu_spike, message_flood, crash_restart,
    /// majorities_ring, bridge, swizzle_clog, oneway_partition, link_faults,
    /// restart_storm, clock_skew, big_state, slow_consumer.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<Nemesis>,
    /// Print the report as JSON (a simulated run's JSON holds only
    /// simulated quantities: two runs of one seed print the same bytes).
    #[arg(long)]
    json: bool,
    /// Write report.html (the timeline inside), timeline.svg and
    /// history.jsonl (for `foundation check`) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Export spans to this OpenTelemetry collector over OTLP/HTTP
    /// (http://HOST:PORT): every node's, and the client's, each workload
    /// operation a trace of its own. Not with --backend sim.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Draw the run live in a browser: serve a page on this loopback
    /// address (127.0.0.1:PORT; port 0 picks one, printed at the start)
    /// with the timeline as it grows, then the verdict.
    #[arg(long, value_name = "ADDR")]
    observe: Option<String>,
}

/// The number of KV clients the run uses.
const CLIENTS: usize = 5;

/// A bad-input error: one line with the fix, exit 2.
fn usage(msg: String) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Checks the options before anything starts.
fn validate(args: &ChaosArgs) -> Result<(), String> {
    if !(1..=9).contains(&args.nodes) {
        return Err(format!("--nodes {} is out of range: use 1 to 9", args.nodes));
    }
    if args.duration == 0 || args.duration > 3600 {
        return Err(format!("--duration {} is out of range: use 1 to 3600 seconds", args.duration));
    }
    if args.otlp_endpoint.is_some() && args.backend == BackendArg::Sim {
        return Err("--otlp-endpoint exports real spans: a simulated run has none (simulated clock and network); use --backend inprocess or processes".into());
    }
    if args.observe.is_some() && args.seeds.is_some() {
        return Err("--observe draws one run: drop it from a --seeds sweep, then replay a seed with --observe".into());
    }
    if let Some(n) = args.seeds {
        if args.backend != BackendArg::Sim {
            return Err("--seeds sweeps seeds in simulation: add --backend sim".into());
        }
        if n == 0 || n > 1_000_000 {
            return Err(format!("--seeds {n} is out of range: use 1 to 1000000"));
        }
        if args.report.is_some() {
            return Err("--report writes one run's report: drop it from a --seeds sweep, then replay a seed with --report".into());
        }
    }
    if args.rate == 0 || args.rate > 100_000 {
        return Err(format!("--rate {} is out of range: use 1 to 100000 operations per second", args.rate));
    }
    let faults = if args.faults.is_empty() { Nemesis::DEFAULT.to_vec() } else { args.faults.clone() };
    if faults == [Nemesis::MajoritiesRing] && args.nodes < 4 {
        return Err(format!("majorities_ring needs at least 4 nodes (--nodes {}): add nodes or other --faults", args.nodes));
    }
    if faults.iter().all(|f| matches!(f, Nemesis::CrashRestart | Nemesis::Partition | Nemesis::Bridge | Nemesis::SwizzleClog))
        && args.nodes < 2
    {
        return Err("network and crash faults need at least 2 nodes: use --nodes 3".into());
    }
    let backend = match args.backend {
        BackendArg::Sim => Backend::Simulated,
        BackendArg::Inprocess => Backend::InProcess,
        BackendArg::Processes => Backend::Processes,
    };
    let unavailable: Vec<String> = faults.iter().filter_map(|f| f.unavailable_on(backend, args.nodes)).collect();
    if unavailable.len() == faults.len() {
        return Err(format!("{}: add nodes, or choose another --backend or other --faults", unavailable.join("; ")));
    }
    if let Some(dir) = &args.report {
        writable(dir).map_err(|e| format!("--report {}: {e}; choose a directory you can write", dir.display()))?;
    }
    Ok(())
}

/// Creates `dir` if needed and checks a file can be written in it.
fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".foundation-write-probe");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}

/// The report: what a reader and `--json` see.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// sim, inprocess or processes.
    pub backend: String,
    /// Cluster size.
    pub nodes: usize,
    /// Seconds of workload and chaos.
    pub duration_s: u64,
    /// Target KV operations per second.
    pub rate: u32,
    /// KV operations by outcome.
    pub operations: Operations,
    /// ok / total.
    pub success_rate: f64,
    /// Message round trips: ok / total.
    pub message_success_rate: f64,
    /// Injections per nemesis.
    pub faults_injected: BTreeMap<String, usize>,
    /// Faults the monkey could not inject (e.g. a node down).
    pub fault_errors: usize,
    /// Injections that changed nothing (not counted above).
    pub faults_no_effect: usize,
    /// The injections the run must exceed (10 for 30 s, scaled).
    pub faults_needed: usize,
    /// Latency of successful KV operations.
    pub latency_ms: Latency,
    /// The linearizability verdict.
    pub linearizable: bool,
    /// When not linearizable: the key and the operation no order explains.
    pub violation: Option<String>,
    /// Heal to convergence (ms), when it converged.
    pub convergence_ms: Option<f64>,
    /// Why it did not converge.
    pub convergence_error: Option<String>,
    /// Lock, service and probe violations, one line each.
    pub violations: Vec<String>,
    /// The checks.
    pub checks: Checks,
    /// Whether every check passed.
    pub passed: bool,
    /// The command that replays this run in simulation.
    pub replay: String,
}

pub use counts::Operations;

/// Latency percentiles (ms).
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

fn backend_name(b: BackendArg) -> &'static str {
    match b {
        BackendArg::Sim => "sim",
        BackendArg::Inprocess => "inprocess",
        BackendArg::Processes => "processes",
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn replay_command(args: &ChaosArgs, seed: u64, faults: &[Nemesis]) -> String {
    let names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
    format!(
        "foundation chaos --backend sim --seed {seed} --nodes {} --duration {} --rate {} --faults {}",
        args.nodes,
        args.duration,
        args.rate,
        names.join(",")
    )
}

fn build_report(args: &ChaosArgs, seed: u64, faults: &[Nemesis], o: &ChaosOutcome) -> Report {
    let w = &o.workload;
    let checks = o.checks();
    let violation = match &o.check.verdict {
        Verdict::Linearizable => None,
        Verdict::NotLinearizable { key, failed, reason, .. } => {
            Some(format!("key {key}: {:?} on line {}: {reason}", failed.kind, failed.line))
        }
        Verdict::Unknown { key, limit, .. } => Some(format!("key {key}: no verdict, {limit}")),
    };
    Report {
        seed,
        backend: backend_name(args.backend).into(),
        nodes: args.nodes,
        duration_s: args.duration,
        rate: args.rate,
        operations: counts::operations(o),
        success_rate: (w.success_rate() * 1e4).round() / 1e4,
        message_success_rate: (o.messages.success_rate() * 1e4).round() / 1e4,
        faults_injected: o.chaos.by_kind().into_iter().map(|(k, v)| (k.name().to_owned(), v)).collect(),
        fault_errors: o.chaos.errors.len(),
        faults_no_effect: o.chaos.no_effect(),
        faults_needed: o.faults_needed(),
        latency_ms: Latency { p50: ms(w.latency_quantile(0.5)), p99: ms(w.latency_quantile(0.99)) },
        linearizable: o.check.verdict == Verdict::Linearizable,
        violation,
        convergence_ms: o.convergence.as_ref().ok().map(|d| ms(*d)),
        convergence_error: o.convergence.as_ref().err().cloned(),
        violations: o.violations(),
        passed: checks.all(),
        checks,
        replay: replay_command(args, seed, faults),
    }
}

fn print_report(r: &Report) {
    for line in report_lines(r) {
        println!("{line}");
    }
}

/// The report as the lines `foundation chaos` prints (and `--observe`
/// shows at the end).
fn report_lines(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let yes = |b: bool| if b { "pass" } else { "FAIL" };
    let nodes = if r.nodes == 1 { "1 node".to_owned() } else { format!("{} nodes", r.nodes) };
    out.push(format!("foundation chaos: {nodes} ({}), {} s, seed {}", r.backend, r.duration_s, r.seed));
    out.push(format!("  operations     {}", counts::line(&r.operations)));
    out.push(format!(
        "  success rate   {:.3} (KV)  {:.3} (messages)   [{}: > 0.8]",
        r.success_rate,
        r.message_success_rate,
        yes(r.checks.success_rate)
    ));
    let total: usize = r.faults_injected.values().sum();
    let kinds: Vec<String> = r.faults_injected.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let idle = if r.faults_no_effect > 0 { format!(" ({} more had no effect)", r.faults_no_effect) } else { String::new() };
    out.push(format!(
        "  faults         {total} injected: {}{idle}   [{}: > {}]",
        kinds.join(", "),
        yes(r.checks.failures_injected),
        r.faults_needed
    ));
    out.push(format!("  latency        p50 {:.2} ms, p99 {:.2} ms", r.latency_ms.p50, r.latency_ms.p99));
    match &r.violation {
        None => out.push(format!("  linearizable   yes, {} operations checked   [pass]", r.operations.checked)),
        Some(v) => out.push(format!("  linearizable   NO: {v}   [FAIL]")),
    }
    match (&r.convergence_ms, &r.convergence_error) {
        (Some(c), _) => out.push(format!("  converged      {c:.1} ms after the heal   [{}]", yes(r.checks.converged))),
        (None, e) => out.push(format!("  converged      no: {}   [FAIL]", e.as_deref().unwrap_or("?"))),
    }
    match r.violations.first() {
        None => out.push("  invariants     locks, services, probes   [pass]".to_owned()),
        Some(v) => out.push(format!("  invariants     {} violated, first: {v}   [FAIL]", r.violations.len())),
    }
    out.push(format!("  verdict        {}", if r.passed { "PASS" } else { "FAIL" }));
    out.push(format!("  replay         {}", r.replay));
    out.push(format!("                 ({})", progress::replay_note(r.backend == "sim")));
    out
}

/// Runs `foundation chaos`.
pub fn run_command(args: &ChaosArgs) -> ExitCode {
    if let Err(msg) = validate(args) {
        return usage(msg);
    }
    let seed = match args.seed {
        Some(s) => s,
        None => match getrandom::u64() {
            Ok(s) => s % 1_000_000,
            Err(e) => {
                eprintln!("error: no random seed ({e}); pass --seed");
                return ExitCode::from(1);
            }
        },
    };
    let faults = if args.faults.is_empty() { Nemesis::DEFAULT.to_vec() } else { args.faults.clone() };
    if let Some(n) = args.seeds {
        return sweep::run_sweep(args, n, &faults);
    }
    let backend = match args.backend {
        BackendArg::Sim => Backend::Simulated,
        BackendArg::Inprocess => Backend::InProcess,
        BackendArg::Processes => Backend::Processes,
    };
    let duration = Duration::from_secs(args.duration);
    let mut spec = ClusterSpec::new(backend, args.nodes, seed);
    spec.sim_limit = duration * 4 + Duration::from_secs(300);
    let mut chaos = ChaosRun::new(duration);
    chaos.faults = faults.clone();
    chaos.clients = CLIENTS;
    chaos.think = Duration::from_secs_f64(CLIENTS as f64 / f64::from(args.rate));
    chaos.progress = Some(progress::reporter(duration));
    let observer = match args.observe.as_deref().map(observe::Observer::start).transpose() {
        Ok(o) => o.map(Arc::new),
        Err(e) => return usage(e),
    };
    if let Some(o) = &observer {
        chaos.live = Some(o.live());
    }
    progress::print_start(args.nodes, backend_name(args.backend), duration, seed, &replay_command(args, seed, &faults));
    if let Some(o) = &observer {
        eprintln!("  observe: {} (the run drawn live)", o.url());
    }
    spec.wall_limit = Some(chaos.wall_limit());
    spec.otlp_endpoint = args.otlp_endpoint.clone();
    let interruptible = backend != Backend::Simulated;
    let result = run(&spec, move |cluster| async move {
        if !interruptible {
            return run_chaos(&cluster, &chaos).await.map(Some);
        }
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => Ok(None),
            r = run_chaos(&cluster, &chaos) => r.map(Some),
        }
    });
    let run = match result {
        Ok(r) => r,
        Err(RunError::Spec(e)) => return usage(e),
        Err(e) => {
            eprintln!("error: {e}; replay it with {}", replay_command(args, seed, &faults));
            return ExitCode::from(1);
        }
    };
    let Some(outcome) = run.value else {
        eprintln!("interrupted: the cluster was stopped; seed {seed}, replay: {}", replay_command(args, seed, &faults));
        return ExitCode::from(130);
    };
    let report = build_report(args, seed, &faults, &outcome);
    // Wall-clock figures go to stderr: a simulated run's stdout is a
    // function of its seed.
    eprintln!("wall time {:.2} s for {:.2} s of cluster time", run.wall_time.as_secs_f64(), run.cluster_time.as_secs_f64());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("the report serializes"));
    } else {
        print_report(&report);
    }
    if let Some(o) = &observer {
        o.finish(report.passed, &report_lines(&report), timeline::svg(report.duration_s, &outcome));
    }
    if let Some(dir) = &args.report {
        if let Err(e) = report::write(dir, &report, &outcome) {
            eprintln!("error: writing the report to {}: {e}", dir.display());
            return ExitCode::from(1);
        }
        eprintln!("report written to {}", dir.join("report.html").display());
    }
    if report.passed { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
