//! The `foundation` command: a cluster under chaos with a report
//! (`chaos`), one node of a real cluster and its status (`node`, `status`),
//! linearizability checks of recorded histories (`check`), and the
//! benchmarks (`bench`).
//!
//! ```sh
//! cargo install --path crates/foundation-cli
//! foundation chaos --duration 10 --report report/   # then open report/report.html
//! foundation check report/history.jsonl
//! ```
//!
//! Every subcommand reports errors in one style ([`fail`]): one line,
//! `error: WHAT; WHAT TO DO`, exit 2 for usage and 1 for runtime failures.

#![warn(missing_docs)]

mod bench;
mod chaos;
mod check;
mod fail;
mod log;
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
    /// How log lines on stderr are written (`RUST_LOG` sets the level:
    /// `foundation node` logs at info by default, the other commands only
    /// when it is set).
    #[arg(long, global = true, value_enum, default_value_t = log::LogFormat::Text)]
    log_format: log::LogFormat,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start; boxing buys nothing
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
    /// Cluster secrets: `foundation secret generate` prints a new one.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Checks a recorded history for linearizability (exit 0 yes, 1 no, 2 bad input, 3 unknown: a limit was reached).
    Check(check::CheckArgs),
    /// Internal: one measurement in a fresh process, for `bench`.
    #[command(hide = true)]
    BenchProbe {
        /// The probe (`idle-bytes`, `idle-bytes-migrating`, `check-peak`).
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

#[derive(Subcommand)]
enum SecretCommand {
    /// Prints a new cluster secret: 256 bits from the OS's random number
    /// generator, in hex. Keep it in a file only its owner reads:
    /// `(umask 077; foundation secret generate > cluster.secret)`, then
    /// `foundation node --secret-file cluster.secret`.
    Generate,
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => e.exit(),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => {
            // The subcommand the user named, to point at its --help.
            let names: Vec<String> = <Cli as clap::CommandFactory>::command().get_subcommands().map(|c| c.get_name().to_owned()).collect();
            let sub = std::env::args().skip(1).find(|a| !a.starts_with('-')).filter(|a| names.contains(a));
            return fail::clap_error(&e, sub.as_deref());
        }
    };
    log::install(cli.log_format, matches!(cli.command, Command::Node(_)));
    run(cli).unwrap_or_else(|e| fail::exit(&e))
}

/// Runs the subcommand; an error is printed in the one style by `main`.
fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let ok = |r: anyhow::Result<()>| r.map(|()| std::process::ExitCode::SUCCESS);
    match cli.command {
        Command::Check(args) => Ok(check::run(&args)),
        Command::Chaos(args) => Ok(chaos::run_command(&args)),
        Command::Bench(args) => ok(bench::run(&args)),
        Command::Node(args) => ok(node::run(args)),
        Command::Status(args) => ok(node::status(args)),
        Command::Secret(SecretCommand::Generate) => {
            let secret = foundation_cluster::secret::generate()?;
            println!("{secret}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::BenchProbe { probe, n, workers, tokio } => {
            let figure = match probe.as_str() {
                "idle-bytes" => bench::process::idle_bytes_probe(n, workers, tokio, false)?,
                "idle-bytes-migrating" => bench::process::idle_bytes_probe(n, workers, tokio, true)?,
                "check-peak" => bench::check::check_peak_probe(n)?,
                _ => anyhow::bail!("unknown probe `{probe}`; the probes are idle-bytes, idle-bytes-migrating and check-peak"),
            };
            println!("{figure}");
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
