//! The `foundation` binary.

mod bench;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench::run(&args),
    }
}
