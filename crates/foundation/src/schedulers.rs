//! CPU work that yields, scheduler utilization, and blocking offload (the
//! seed's `Foundation.BEAM.Schedulers`).
//!
//! The BEAM preempts a process after a budget of reductions. Tokio cannot
//! preempt: a task runs until it awaits. So CPU-heavy work here is cut into
//! slices, and the task yields between them, letting other processes and
//! timers on the same worker run:
//!
//! - [`cpu_intensive_with_yielding`] slices by item count
//!   ([`SLICE_ITEMS_DEFAULT`]) and by time ([`SLICE_TIME_DEFAULT`], 0.5 ms),
//!   whichever comes first; [`Slicing`] sets both. Half a millisecond, not
//!   the BEAM's "about 1 ms": tokio's timers fire on 1 ms ticks, so a due
//!   timer already waits up to 1 ms, and a 1 ms slice would double that.
//!   With 0.5 ms slices a 1 ms ticker stays under 2 ms late at p99 while
//!   every worker runs CPU work (the `scheduler.tick_lag_p99` bench).
//! - [`Ctx::offload`](crate::Ctx::offload) moves work that blocks (file I/O,
//!   a C library, a long computation that cannot be sliced) to tokio's
//!   blocking pool and delivers the result as a message.
//! - [`UtilizationSample`] reads the runtime's own per-worker busy time;
//!   [`scheduler_utilization`] turns two samples into the busy fraction of
//!   each worker between them. On a pool that busy-waits (see
//!   [`SchedulerPool`](crate::rt::SchedulerPool)), the busy-wait task's
//!   own polls count as busy: up to about half of each 50 µs window spent
//!   waiting after a burst of work (its clock read and `sched_yield`; the
//!   driver polls between them are idle time).

use std::time::Duration;

use crate::rt::Instant;

/// Items per slice unless [`Slicing`] says otherwise.
pub const SLICE_ITEMS_DEFAULT: usize = 4096;
/// Time per slice unless [`Slicing`] says otherwise (see the module docs).
pub const SLICE_TIME_DEFAULT: Duration = Duration::from_micros(500);
/// Items per slice when only a time bound is given (a backstop for clocks
/// that do not move).
pub const SLICE_ITEMS_HARD_MAX: usize = 1 << 20;
/// The clock is read at most once per this many items (reading it costs
/// ~20 ns); slow items make it read more often, down to every item.
const CLOCK_EVERY_ITEMS_MAX: usize = 64;

/// How [`cpu_intensive_with_yielding_by`] cuts work into slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slicing {
    /// Yield after this many items (`None`: no item bound).
    pub items: Option<usize>,
    /// Yield after about this much time (`None`: no time bound). Under a
    /// simulated (paused) clock time does not pass, so only `items` applies
    /// ([`SLICE_ITEMS_HARD_MAX`] if `items` is `None`).
    pub time: Option<Duration>,
}

impl Default for Slicing {
    fn default() -> Self {
        Self { items: Some(SLICE_ITEMS_DEFAULT), time: Some(SLICE_TIME_DEFAULT) }
    }
}

/// Maps `f` over `items` in slices, yielding between slices; returns the
/// results in order. See the module docs.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use foundation::schedulers::cpu_intensive_with_yielding;
/// let squares = cpu_intensive_with_yielding(1..=100_000u64, |x| x * x).await;
/// assert_eq!(squares.len(), 100_000);
/// assert_eq!(squares[9], 100);
/// # });
/// ```
pub async fn cpu_intensive_with_yielding<T, R>(items: impl IntoIterator<Item = T>, f: impl FnMut(T) -> R) -> Vec<R> {
    cpu_intensive_with_yielding_by(items, Slicing::default(), f).await
}

/// [`cpu_intensive_with_yielding`] with explicit slicing. A `Slicing` with
/// neither bound is refused (it would never yield): it panics, as a misuse.
pub async fn cpu_intensive_with_yielding_by<T, R>(
    items: impl IntoIterator<Item = T>,
    slicing: Slicing,
    mut f: impl FnMut(T) -> R,
) -> Vec<R> {
    assert!(slicing.items.is_some() || slicing.time.is_some(), "a Slicing needs an item bound, a time bound, or both");
    // A time bound alone never fires under a paused (simulated) clock: keep
    // a hard item bound behind it.
    let item_bound = slicing.items.unwrap_or(SLICE_ITEMS_HARD_MAX);
    let items = items.into_iter();
    let mut out = Vec::with_capacity(items.size_hint().0);
    let mut in_slice = 0usize;
    // When to read the clock next: after the first item, then at a spacing
    // fitted to the cost per item, so a slice overshoots its time by about
    // one item at most.
    let mut next_check = 1usize;
    let mut slice_start = Instant::now();
    for item in items {
        out.push(f(item));
        in_slice += 1;
        let mut done = in_slice >= item_bound;
        if let Some(budget) = slicing.time.filter(|_| !done && in_slice >= next_check) {
            let elapsed = slice_start.elapsed();
            done = elapsed >= budget;
            let per_item = elapsed / u32::try_from(in_slice).unwrap_or(u32::MAX);
            let left = budget.saturating_sub(elapsed);
            let fit = if per_item.is_zero() { CLOCK_EVERY_ITEMS_MAX } else { (left.as_nanos() / per_item.as_nanos().max(1)) as usize / 2 };
            next_check = in_slice + fit.clamp(1, CLOCK_EVERY_ITEMS_MAX);
        }
        if done {
            yield_to_others().await;
            in_slice = 0;
            next_check = 1;
            slice_start = Instant::now();
        }
    }
    out
}

/// Lets every task that is ready, and every timer that is due, run before
/// this one resumes.
///
/// One `yield_now` is not enough on tokio's multi-thread workers: the
/// yielding task is woken again right after the timers are polled and takes
/// the worker's LIFO slot, ahead of the timer's task it just woke. Yielding a
/// second time from that slot sends it behind them.
pub async fn yield_to_others() {
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
}

/// Per-worker busy time of the runtime(s) running a node's processes, at
/// one moment. Take one before and one after, then compare them with
/// [`scheduler_utilization`].
#[derive(Clone, Debug)]
pub struct UtilizationSample {
    at: std::time::Instant,
    busy: Vec<Duration>,
}

impl UtilizationSample {
    /// Samples the current tokio runtime (every worker). Outside a runtime
    /// the sample is empty.
    pub fn current() -> Self {
        let busy = match tokio::runtime::Handle::try_current() {
            Ok(handle) => busy_of(&handle),
            Err(_) => Vec::new(),
        };
        Self::from_busy(busy)
    }

    /// Samples the given runtimes (a scheduler pool's, in order).
    pub fn of(handles: &[tokio::runtime::Handle]) -> Self {
        Self::from_busy(handles.iter().flat_map(busy_of).collect())
    }

    fn from_busy(busy: Vec<Duration>) -> Self {
        // The host's monotonic clock, as the runtime's busy counters are.
        let at = std::time::Instant::now();
        Self { at, busy }
    }

    /// Workers sampled.
    pub fn workers(&self) -> usize {
        self.busy.len()
    }
}

fn busy_of(handle: &tokio::runtime::Handle) -> Vec<Duration> {
    let metrics = handle.metrics();
    (0..metrics.num_workers()).map(|w| metrics.worker_total_busy_duration(w)).collect()
}

/// Busy fraction of each worker between two samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Utilization {
    /// One fraction (0.0..=1.0) per worker.
    pub per_worker: Vec<f64>,
}

impl Utilization {
    /// The busiest worker's fraction (the seed asks that none be at 100%).
    pub fn max(&self) -> f64 {
        self.per_worker.iter().copied().fold(0.0, f64::max)
    }

    /// The mean over workers.
    pub fn mean(&self) -> f64 {
        if self.per_worker.is_empty() { 0.0 } else { self.per_worker.iter().sum::<f64>() / self.per_worker.len() as f64 }
    }
}

/// Busy fraction of each worker between `start` and `end`, which must be
/// samples of the same runtime(s) (workers are paired in order; extra ones
/// in either sample are left out).
pub fn scheduler_utilization(start: &UtilizationSample, end: &UtilizationSample) -> Utilization {
    let wall = end.at.saturating_duration_since(start.at).as_secs_f64();
    let per_worker = start
        .busy
        .iter()
        .zip(&end.busy)
        .map(|(a, b)| if wall > 0.0 { (b.saturating_sub(*a).as_secs_f64() / wall).min(1.0) } else { 0.0 })
        .collect();
    Utilization { per_worker }
}
