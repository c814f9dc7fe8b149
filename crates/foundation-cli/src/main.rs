//! The `foundation` binary.

mod bench;
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
    /// Runs the benchmarks and prints a table (or JSON lines).
    Bench(bench::BenchArgs),
    /// Runs one node: the mesh, a consensus member, the admin HTTP API.
    Node(node::NodeArgs),
    /// Prints the cluster as one node sees it (from its admin HTTP API).
    Status(node::StatusArgs),
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Node(args) => node::run(args),
        Command::Status(args) => node::status(args),
        Command::BenchProbe { probe, n, workers, tokio } => {
            anyhow::ensure!(probe == "idle-bytes", "unknown probe `{probe}`; the only probe is idle-bytes");
            println!("{}", bench::process::idle_bytes_probe(n, workers, tokio)?);
            Ok(())
        }
    }
}
