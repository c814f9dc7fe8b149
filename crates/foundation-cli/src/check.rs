//! `foundation check HISTORY`: is a recorded history linearizable?

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use foundation_testkit::linearizability::{Op, OpKind, Verdict, check_history};

/// Options of `foundation check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The history: JSON Lines, one event per line (see the README).
    history: PathBuf,
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

/// Checks the history; exit 0 linearizable, 1 not, 2 unreadable or malformed.
pub fn run(args: &CheckArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.history) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: cannot read {}: {e}; give the path of a history file (JSON Lines, e.g. a chaos report's history.jsonl)",
                args.history.display()
            );
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let result = match check_history(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}; fix that line (the format is in the README's `foundation check` section)", args.history.display());
            return ExitCode::from(2);
        }
    };
    let took = started.elapsed();
    match result.verdict {
        Verdict::Linearizable => {
            println!("linearizable: {} operations on {} keys ({} states, {took:.1?})", result.ops, result.keys, result.states);
            ExitCode::SUCCESS
        }
        Verdict::NotLinearizable { key, failed, window } => {
            println!("NOT linearizable: key {key:?} ({} operations on {} keys, {took:.1?})", result.ops, result.keys);
            println!("no order of the operations explains: {}", show(&failed));
            println!("failing window (operations around it, by invoke time):");
            for op in &window {
                let mark = if *op == failed { ">" } else { " " };
                println!("{mark} {}", show(op));
            }
            ExitCode::from(1)
        }
    }
}
