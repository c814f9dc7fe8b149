//! One error style for every subcommand: a single line on stderr,
//! `error: WHAT HAPPENED; WHAT TO DO`, and the exit code says whose move it
//! is:
//!
//! - **2, usage**: the command line is wrong (a missing flag, a bad value,
//!   a path given that cannot be read or written, a secret too short),
//!   found before anything started. Fix the command and run it again.
//! - **1, runtime**: something failed while running (a node that cannot
//!   bind its address, a node that does not answer, a failed check).
//!
//! Expected errors never print a backtrace, whatever `RUST_BACKTRACE`
//! says: they are reported through `Display`, not anyhow's `Debug`.
//! (`foundation check` adds 3, "unknown: a limit was reached"; `foundation
//! chaos` 130, interrupted.)

use std::process::ExitCode;

/// Exit code of a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a failure while running.
pub const EXIT_RUNTIME: u8 = 1;

/// A usage error: its message names the flag or path and says how to fix
/// it. Returned inside an `anyhow::Error`, it makes the exit code 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error as an `anyhow::Error` (exit 2).
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// One line: the chain of causes joined by `: `, newlines folded.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Prints `error: ...` for `e` and returns its exit code: 2 when it is (or
/// wraps) a [`Usage`], 1 otherwise.
pub fn exit(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", one_line(&format!("{e:#}")));
    ExitCode::from(if e.downcast_ref::<Usage>().is_some() { EXIT_USAGE } else { EXIT_RUNTIME })
}

/// Prints a usage error from a message and returns exit code 2.
pub fn exit_usage(msg: &str) -> ExitCode {
    eprintln!("error: {}", one_line(msg));
    ExitCode::from(EXIT_USAGE)
}

/// A command-line parse error in the one style: clap's message with the
/// arguments it lists (the missing ones, the possible values), its tip,
/// the usage line, and where the options are described (`foundation
/// SUBCOMMAND --help` when the subcommand is known); exit 2.
pub fn clap_error(e: &clap::Error, subcommand: Option<&str>) -> ExitCode {
    let text = e.render().to_string();
    let mut what: Vec<String> = Vec::new();
    let mut listed: Vec<&str> = Vec::new();
    let mut usage_line = None;
    let mut in_list = false;
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix("error:") {
            what.push(rest.trim().trim_end_matches(':').to_owned());
            in_list = rest.trim_end().ends_with(':');
        } else if in_list && raw.starts_with(' ') && !line.is_empty() {
            // The indented lines under "...not provided:": the arguments.
            listed.push(line);
        } else if line.starts_with("tip:") || line.starts_with("[possible values") {
            in_list = false;
            what.push(line.to_owned());
        } else if let Some(u) = line.strip_prefix("Usage:") {
            in_list = false;
            usage_line = Some(u.trim().to_owned());
        } else {
            in_list = false;
        }
    }
    let mut msg = what.join(" ");
    if !listed.is_empty() {
        msg = format!("{msg}: {}", listed.join(", "));
    }
    let command = subcommand.map_or("foundation".to_owned(), |s| format!("foundation {s}"));
    if let Some(u) = &usage_line {
        msg = format!("{msg}; usage: {u}");
    }
    exit_usage(&format!("{msg}; see `{command} --help`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_and_others_1_even_under_context() {
        use anyhow::Context as _;
        let wrapped: anyhow::Result<()> = Err(usage("--x is bad; use --x 1"));
        let e = wrapped.context("starting").expect_err("an error");
        assert!(e.downcast_ref::<Usage>().is_some(), "found under a context");
        assert!(anyhow::anyhow!("disk full").downcast_ref::<Usage>().is_none());
    }

    #[test]
    fn one_line_folds_newlines() {
        assert_eq!(one_line("a\n\n  b\nc "), "a b c");
    }
}
