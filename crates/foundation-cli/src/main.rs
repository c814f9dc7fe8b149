//! The `foundation` binary.

mod bench;
mod chaos;
mod check;
mod node;

// mimalloc: fewer page faults on spawn bursts and tighter size classes for
// small process blocks than glibc malloc (see README figures).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Foundation: BEAM-style processes, supervision and clusters for Rust.
#[derive(Parser)]
#[command(name = "foundation", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a local cluster under chaos beside a workload, checks the
    /// history and prints a report (exit 0 only if every check passes).
    Chaos(chaos::ChaosArgs),
    /// Runs the benchmarks and prints a table (or JSON lines).
    Bench(bench::BenchArgs),
    /// Runs one node: the mesh, a consensus member, the admin HTTP API.
    Node(node::NodeArgs),
    /// Prints the cluster as one node sees it (from its admin HTTP API).
    Status(node::StatusArgs),
    /// Checks a recorded history for linearizability (exit 0 yes, 1 no, 2 bad input).
    Check(check::CheckArgs),
    /// Internal: one measurement in a fresh process, for `bench`.
    #[command(hide = true)]
    BenchProbe {
        /// The probe (`idle-bytes`).
        probe: String,
        /// Its size.
        n: usize,
        /// Schedulers (or tokio workers).
        #[arg(long)]
        workers: usize,
        /// On tokio's work-stealing runtime.
        #[arg(long)]
        tokio: bool,
    },
}

/// Bad usage in one line: clap's error, its tip and the possible values,
/// then where the options are described; exit 2.
fn usage_error(e: &clap::Error) -> std::process::ExitCode {
    let text = e.render().to_string();
    let mut parts: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("error:") || line.starts_with("tip:") || line.starts_with("[possible values") {
            parts.push(line);
        }
    }
    eprintln!("{}; see --help", parts.join(" "));
    std::process::ExitCode::from(2)
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => e.exit(),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => return Ok(usage_error(&e)),
    };
    let ok = |r: anyhow::Result<()>| r.map(|()| std::process::ExitCode::SUCCESS);
    match cli.command {
        Command::Check(args) => Ok(check::run(&args)),
        Command::Chaos(args) => Ok(chaos::run_command(&args)),
        Command::Bench(args) => ok(bench::run(&args)),
        Command::Node(args) => ok(node::run(args)),
        Command::Status(args) => ok(node::status(args)),
        Command::BenchProbe { probe, n, workers, tokio } => {
            anyhow::ensure!(probe == "idle-bytes", "unknown probe `{probe}`; the only probe is idle-bytes");
            println!("{}", bench::process::idle_bytes_probe(n, workers, tokio)?);
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
