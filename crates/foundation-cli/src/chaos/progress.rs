//! What `foundation chaos` says while it runs, on stderr (stdout is the
//! report): a start line with the seed and the replay command, so that
//! neither is lost if the run is interrupted; then a progress bar on a
//! terminal, or a line every [`PROGRESS_EVERY`] of run time otherwise (a
//! pipe, CI, a log).

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use foundation_testkit::scenario::Progress;

/// How often a progress line is printed when stderr is not a terminal, in
/// the run's time (virtual under `--backend sim`).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What the replay line is, for a reader: a simulated run with the same
/// seed and fault mix; under `--backend sim` that is the run itself, for
/// real nodes it is not (their schedule is not a function of the seed).
pub fn replay_note(simulated: bool) -> &'static str {
    if simulated {
        "a simulated run with the same seed and fault mix: this same run, as a simulated run is a function of its seed"
    } else {
        "a simulated run with the same seed and fault mix, not this run: real nodes do not follow a seed's schedule"
    }
}

/// The start line and the replay line.
pub fn print_start(nodes: usize, backend: &str, duration: Duration, seed: u64, replay: &str) {
    eprintln!("foundation chaos: starting {nodes} nodes ({backend}), {} s, seed {seed}", duration.as_secs());
    eprintln!("  replay: {replay}  ({})", replay_note(backend == "sim"));
}

/// The run's progress reporter: a bar when stderr is a terminal, else
/// a line every [`PROGRESS_EVERY`].
pub fn reporter(duration: Duration) -> Arc<dyn Fn(Progress) + Send + Sync> {
    if std::io::stderr().is_terminal() { bar(duration) } else { lines() }
}

fn bar(duration: Duration) -> Arc<dyn Fn(Progress) + Send + Sync> {
    let bar = indicatif::ProgressBar::new(duration.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    Arc::new(move |p: Progress| {
        bar.set_position(p.elapsed.as_secs());
        bar.set_message(format!("{} operations recorded, {} fault actions", p.operations, p.faults));
        if p.elapsed >= p.duration {
            bar.finish_and_clear();
        }
    })
}

fn lines() -> Arc<dyn Fn(Progress) + Send + Sync> {
    // The next line is due when the run's time reaches `next` seconds.
    let next = AtomicU64::new(PROGRESS_EVERY.as_secs());
    Arc::new(move |p: Progress| {
        let due = next.load(Ordering::Relaxed);
        if p.elapsed.as_secs() < due {
            return;
        }
        next.store(due + PROGRESS_EVERY.as_secs(), Ordering::Relaxed);
        eprintln!("{}", line(&p));
    })
}

/// `  progress   5 s / 30 s: 1234 operations recorded, 3 fault actions`:
/// the history's operations so far (KV and services), and the fault log's
/// entries (an injection and its undoing are two).
fn line(p: &Progress) -> String {
    let plural = |n: usize, one: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") };
    format!(
        "  progress {:>3} s / {} s: {}, {}",
        p.elapsed.as_secs(),
        p.duration.as_secs(),
        plural(p.operations, "operation") + " recorded",
        plural(p.faults, "fault action")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_counts_in_words() {
        let p = Progress { elapsed: Duration::from_secs(5), duration: Duration::from_secs(30), operations: 1, faults: 2 };
        assert_eq!(line(&p), "  progress   5 s / 30 s: 1 operation recorded, 2 fault actions");
    }
}
