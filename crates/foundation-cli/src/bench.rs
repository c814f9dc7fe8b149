//! `foundation bench`: the headline figures of each layer.
//!
//! Output contract: a table by default; with `--json`, one JSON object per
//! line, `{"bench": NAME, "value": NUMBER, "unit": UNIT}`. Each figure is the
//! median of `--runs` runs after one unmeasured warm-up run. Processes run on
//! a scheduler pool, one scheduler per core (`--workers`), or with `--tokio`
//! on tokio's work-stealing runtime; each run uses a fresh `Node`, and each
//! bench's processes are spawned from one root process, as the seed's
//! benchmarks run from their test process.

pub mod check;
mod consensus;
mod ecosystem;
mod messages;
pub mod process;
mod remote;
mod scaling;
mod scheduler;
mod storage;
mod user;

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use std::future::Future;
use std::sync::Arc;

use foundation::rt::{RtConfig, SchedulerPool, Spawner};
use foundation::{Ctx, Node, NodeConfig};
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// Options of `foundation bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Run only the benches whose name starts with this prefix, or with
    /// any of several prefixes separated by commas (`user.default,scheduler`),
    /// in the order of the full run.
    #[arg(long)]
    only: Option<String>,
    /// Smaller sizes (for a smoke run; figures are less stable).
    #[arg(long)]
    quick: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Runs per bench; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,
    /// Print every run's figure to stderr (the spread behind each median).
    #[arg(long)]
    verbose: bool,
    /// Schedulers (or tokio workers with `--tokio`); default one per core.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Run processes on tokio's work-stealing runtime instead of
    /// Foundation's scheduler pool.
    #[arg(long)]
    tokio: bool,
    /// Instead of the benches: how cost grows (spawn time against the
    /// number of processes, message throughput against process pairs,
    /// commits against clients and against group size), as a table and as
    /// SVG plots written to this directory.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["only", "json"])]
    scaling: Option<std::path::PathBuf>,
}

/// One reported figure.
#[derive(Serialize, Debug, Clone)]
pub struct Figure {
    bench: &'static str,
    value: f64,
    unit: &'static str,
}

/// A bench: its name, unit, target (for the table) and one measured run.
pub struct Bench {
    pub name: &'static str,
    pub unit: &'static str,
    pub target: &'static str,
    /// Measures once; returns the figure in `unit`.
    pub run: fn(&Sizes, &Harness) -> anyhow::Result<f64>,
    /// Run once unmeasured first (allocator, threads and caches warm).
    pub warmup: bool,
}

/// Workload sizes (full or `--quick`) and where processes run.
pub struct Sizes {
    pub quick: bool,
    pub workers: usize,
    pub tokio: bool,
}

impl Sizes {
    pub fn pick(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// What a bench runs on: a driver runtime for the harness's own awaiting,
/// and where the processes run (a scheduler pool, or with `--tokio` the
/// driver itself, multi-threaded).
pub struct Harness {
    pub driver: Runtime,
    pool: Option<Arc<SchedulerPool>>,
}

impl Harness {
    pub fn new(sizes: &Sizes) -> anyhow::Result<Self> {
        if sizes.tokio {
            let driver = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(sizes.workers)
                .enable_all()
                .build()
                .context("building the tokio runtime")?;
            return Ok(Self { driver, pool: None });
        }
        let driver = tokio::runtime::Builder::new_current_thread().enable_all().build().context("building the driver runtime")?;
        let pool = SchedulerPool::new(sizes.workers).context("starting the scheduler pool")?;
        Ok(Self { driver, pool: Some(pool) })
    }

    /// A fresh node whose processes run where this harness says.
    pub fn node(&self) -> Node {
        self.named_node("bench")
    }

    /// A fresh node called `name` (see [`Harness::node`]).
    pub fn named_node(&self, name: &str) -> Node {
        let spawner = match &self.pool {
            Some(pool) => Spawner::Pool(pool.clone()),
            None => Spawner::Ambient,
        };
        let rt = RtConfig { spawner, ..RtConfig::default() };
        Node::with_config(NodeConfig { name: name.into(), rt, ..NodeConfig::default() }).expect("the default node config is valid")
    }
}

impl Harness {
    /// Runs `fut` on scheduler `index` (modulo the pool's size), or on the
    /// driver's runtime with `--tokio`; what it creates (sockets, tasks)
    /// stays there.
    pub async fn on_scheduler<T: Send + 'static>(&self, index: usize, fut: impl Future<Output = T> + Send + 'static) -> anyhow::Result<T> {
        let handle = match &self.pool {
            Some(pool) => pool.spawn_on(index % pool.schedulers(), fut).expect("index within the pool"),
            None => foundation::rt::spawn(fut),
        };
        handle.await.context("a bench task panicked")
    }

    /// `SpawnOpts::scheduler` for scheduler `index` (none with `--tokio`).
    pub fn placement(&self, index: usize) -> Option<usize> {
        self.pool.as_ref().map(|p| index % p.schedulers())
    }
}

/// Runs `f` as the bench's root process (like the seed's test process) and
/// returns its result. Processes it spawns are placed next to it.
pub async fn in_root<T, F, Fut>(node: &Node, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(Ctx<()>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let root = node.spawn(move |ctx| {
        let work = f(ctx);
        async move {
            let _ = tx.send(work.await);
        }
    });
    let exited = node.watch(root.pid());
    let result = rx.await.context("the root process ended without a result")?;
    // Gone before the caller counts processes.
    exited.await;
    Ok(result)
}

fn all_benches() -> Vec<Bench> {
    let mut all = user::benches();
    all.extend(ecosystem::benches());
    all.extend(process::benches());
    all.extend(messages::benches());
    all.extend(scheduler::benches());
    all.extend(remote::benches());
    all.extend(consensus::benches());
    all.extend(storage::benches());
    all.extend(check::benches());
    all
}

/// The CPU model, its core count and the mesh MAC's engine on it (the
/// project's machine has run on CPUs with and without AVX-512, which
/// moves `remote.echo_1mib` by 2x).
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| info.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())))
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let engine = foundation_cluster::mac::MacKey::new(&[0; 32]).engine();
    format!("machine: {model}, {cores} cores; mesh MAC engine: {engine}")
}

/// Runs the selected benches and prints their figures.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let workers = args.workers.map_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()), usize::from);
    let sizes = Sizes { quick: args.quick, workers, tokio: args.tokio };
    if let Some(dir) = &args.scaling {
        return scaling::run(&sizes, args.runs, dir);
    }
    let selected = select(all_benches(), args.only.as_deref())?;
    // Figures from different machines are not comparable: say which this is.
    eprintln!("{}", machine());
    if !args.json {
        println!("{:<32} {:>10} {:<6} {:<30} met?", "bench", "median", "unit", "target");
    }
    let mut figures: Vec<(&str, f64)> = Vec::new();
    for bench in &selected {
        let harness = Harness::new(&sizes)?;
        if bench.warmup {
            (bench.run)(&sizes, &harness).with_context(|| format!("bench {} (warm-up)", bench.name))?;
        }
        let mut values = Vec::with_capacity(args.runs as usize);
        for _ in 0..args.runs {
            values.push((bench.run)(&sizes, &harness).with_context(|| format!("bench {}", bench.name))?);
        }
        if args.verbose {
            let shown: Vec<String> = values.iter().map(|v| format_value(*v)).collect();
            eprintln!("{}: runs {}", bench.name, shown.join(" "));
        }
        let value = median(&mut values);
        if args.json {
            println!("{}", serde_json::to_string(&Figure { bench: bench.name, value, unit: bench.unit })?);
        } else {
            let verdict = match met(bench.target, value, &figures) {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            };
            println!("{:<32} {:>10} {:<6} {:<30} {verdict}", bench.name, format_value(value), bench.unit, bench.target);
        }
        figures.push((bench.name, value));
    }
    Ok(())
}

/// The benches `--only` names: those whose name starts with one of its
/// comma-separated prefixes, in the full run's order. A prefix that names
/// none is a usage error (a typo would otherwise drop benches silently).
fn select(all: Vec<Bench>, only: Option<&str>) -> anyhow::Result<Vec<Bench>> {
    let Some(only) = only else { return Ok(all) };
    let prefixes: Vec<&str> = only.split(',').map(str::trim).collect();
    if let Some(unknown) = prefixes.iter().find(|p| p.is_empty() || !all.iter().any(|b| b.name.starts_with(**p))) {
        let mut groups: Vec<&str> = all.iter().map(|b| b.name.split('.').next().unwrap_or(b.name)).collect();
        groups.dedup();
        return Err(crate::fail::usage(format!(
            "--only {unknown:?}: no bench name starts with it; use a prefix such as {}, or several separated by commas \
             (`foundation bench` runs them all)",
            groups.join(", ")
        )));
    }
    Ok(all.into_iter().filter(|b| prefixes.iter().any(|p| b.name.starts_with(p))).collect())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// Three significant figures, whatever the size: `0.487`, `43.4`, `161`,
/// `4,693`, `37.8M`.
fn format_value(v: f64) -> String {
    if v.abs() >= 1e6 {
        return format!("{}M", significant(v / 1e6));
    }
    if v.abs() >= 1e3 {
        let digits = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        return if v < 0.0 { format!("-{grouped}") } else { grouped };
    }
    significant(v)
}

fn significant(v: f64) -> String {
    let digits = if v == 0.0 { 1 } else { v.abs().log10().floor() as i32 + 1 };
    let decimals = (3 - digits).clamp(0, 3) as usize;
    format!("{v:.decimals$}")
}

/// Whether `value` meets `target`, read from the target's text: `<= N` or
/// `>= N` (N may end in `k` or `M`; anything after it, such as a reference
/// figure in parentheses, is ignored), or `<= Kx NAME` against the figure
/// of the bench named `NAME` (or ending in `.NAME`) measured earlier in this
/// run. `None` when there is no target or its reference did not run.
fn met(target: &str, value: f64, earlier: &[(&str, f64)]) -> Option<bool> {
    let mut words = target.split_whitespace();
    let at_most = match words.next()? {
        "<=" | "≤" => true,
        ">=" | "≥" => false,
        _ => return None,
    };
    let bound = words.next()?;
    let limit = if let Some(times) = bound.strip_suffix('x') {
        let name = words.next()?;
        let reference = earlier.iter().find(|(n, _)| *n == name || n.ends_with(&format!(".{name}")))?.1;
        times.parse::<f64>().ok()? * reference
    } else {
        let (number, scale) = match bound.strip_suffix('M') {
            Some(n) => (n, 1e6),
            None => bound.strip_suffix('k').map_or((bound, 1.0), |n| (n, 1e3)),
        };
        number.parse::<f64>().ok()? * scale
    };
    Some(if at_most { value <= limit } else { value >= limit })
}

/// Nanoseconds per item.
pub fn ns_per(elapsed: Duration, items: usize) -> f64 {
    elapsed.as_nanos() as f64 / items as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_have_three_significant_digits() {
        let shown: Vec<String> = [0.4871, 1.153, 43.41, 161.2, 4693.0, 37_000.0, 37_812_345.0, 0.0].map(format_value).to_vec();
        assert_eq!(shown, ["0.487", "1.15", "43.4", "161", "4,693", "37,000", "37.8M", "0.00"]);
    }

    #[test]
    fn targets_are_read_from_their_text() {
        assert_eq!(met("<= 0.5", 0.49, &[]), Some(true));
        assert_eq!(met("<= 0.5", 0.51, &[]), Some(false));
        assert_eq!(met(">= 20M", 37.8e6, &[]), Some(true));
        assert_eq!(met(">= 2M (OTP 25: 154k)", 1.9e6, &[]), Some(false));
        assert_eq!(met("<= 10 (etcd: 34)", 4.3, &[]), Some(true));
        assert_eq!(met("<= 2x small", 90.0, &[("message.small", 50.0)]), Some(true));
        assert_eq!(met("<= 2x small", 110.0, &[("message.small", 50.0)]), Some(false));
        assert_eq!(met("<= 2x small", 90.0, &[]), None, "the reference did not run");
        assert_eq!(met("-", 1.0, &[]), None);
        assert_eq!(met("- (the ceiling)", 1.0, &[]), None);
    }

    #[test]
    fn median_of_odd_and_even_runs() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
