//! `foundation check HISTORY`: is a recorded history linearizable?

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use foundation_testkit::linearizability::{Limits, Op, OpKind, Verdict, check_with, parse_history_reader};

/// Options of `foundation check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The history: JSON Lines, one event per line (see the README).
    history: PathBuf,
    /// Memory the search may use, in MiB; past it the answer is "unknown" (exit 3).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    memory_mib: u64,
    /// Time the check may take, in seconds; past it the answer is "unknown" (exit 3).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
}

fn show(op: &Op) -> String {
    let v = |x: Option<i64>| x.map_or("null".to_owned(), |v| v.to_string());
    let what = match op.kind {
        OpKind::Read(x) => format!("read -> {}", v(x)),
        OpKind::Write(x) => format!("write {}", v(x)),
        OpKind::Cas(a, b) => format!("cas {} -> {}", v(a), v(b)),
    };
    let until = op.ret.map_or("(unknown outcome)".to_owned(), |r| r.to_string());
    format!("line {:>6}  process {:>4}  [{} .. {}]  {what}", op.line, op.process, op.call, until)
}

/// `1 key`, `3 keys`.
fn count(n: usize, one: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") }
}

fn print_window(window: &[Op], mark: Option<&Op>) {
    for op in window {
        let m = if Some(op) == mark { ">" } else { " " };
        println!("{m} {}", show(op));
    }
}

/// Checks the history; exit 0 linearizable, 1 not, 2 unreadable or
/// malformed, 3 unknown (a limit was reached).
pub fn run(args: &CheckArgs) -> ExitCode {
    let file = match std::fs::File::open(&args.history) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "error: cannot read {}: {e}; give the path of a history file (JSON Lines, e.g. a chaos report's history.jsonl)",
                args.history.display()
            );
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let ops = match parse_history_reader(BufReader::new(file)) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("error: {}: {e}; fix that line (the format is in the README's `foundation check` section)", args.history.display());
            return ExitCode::from(2);
        }
    };
    let limits = Limits { memory_bytes: args.memory_mib << 20, time: Duration::from_secs(args.timeout) };
    let result = check_with(&ops, limits);
    let took = started.elapsed();
    match result.verdict {
        Verdict::Linearizable => {
            println!(
                "linearizable: {} on {} ({} states, {took:.1?})",
                count(result.ops, "operation"),
                count(result.keys, "key"),
                result.states
            );
            ExitCode::SUCCESS
        }
        Verdict::NotLinearizable { key, failed, reason, window } => {
            println!("NOT linearizable: key {key:?} ({} on {}, {took:.1?})", count(result.ops, "operation"), count(result.keys, "key"));
            println!("no order of the operations explains: {}", show(&failed));
            println!("why: {reason}");
            println!("failing window (operations around it, by invoke time):");
            print_window(&window, Some(&failed));
            ExitCode::from(1)
        }
        Verdict::Unknown { key, limit, window } => {
            println!(
                "UNKNOWN: no verdict on key {key:?}: {limit} ({} on {}, {} states, {took:.1?}); no other key failed",
                count(result.ops, "operation"),
                count(result.keys, "key"),
                result.states
            );
            println!("raise --timeout or --memory-mib to search further");
            println!("the search was working around (by invoke time):");
            print_window(&window, None);
            ExitCode::from(3)
        }
    }
}
