//! A pool of schedulers, the BEAM's way: one tokio runtime with a single
//! worker thread per scheduler, and processes that stay where they were
//! spawned. (A one-worker multi-thread runtime, not a current-thread one:
//! its LIFO slot runs a woken process next, which is what message passing
//! wants; the current-thread scheduler was 2× slower on request/ack.)
//!
//! Placement: a spawn from one of the pool's threads runs on that same
//! scheduler (a supervisor's children sit next to it, and their messages
//! never cross cores); a spawn from anywhere else goes round-robin.
//!
//! Migration, the BEAM's way, but pushed rather than stolen (tokio's run
//! queues cannot be read): each scheduler counts the polls it runs and
//! every [`BALANCE_WINDOW`] polls reads the clock (every [`HEAVY_WINDOW`]
//! once a window looked heavy). A heavy window (polls averaging
//! [`HEAVY_POLL`] or more, with no park in between) by the wall clock, and
//! then by the thread's CPU time (a preempted thread looks heavy by the
//! wall clock only), twice in a row (a slow page fault is not a load),
//! while another scheduler was idle since the last look (parked now, or its park counter moved) turn exporting on
//! for the next window: every other process about to be polled moves to that
//! scheduler first (its body is boxed, so its task can end and a new one
//! continue it there; see `process::Roaming`), unless it moved less than
//! [`SETTLE_POLLS`] polls ago. Once the other scheduler stops parking it
//! has enough, and exporting stops. Light
//! polls, as in message ping-pong, never export, so processes that talk to
//! each other stay together. The cost when nothing moves: a thread-local
//! count per poll and one clock read per window.
//!
//! Why: with tokio's work-stealing runtime, a supervisor's children and
//! their peers are spread over all workers, and every message then moves
//! cache lines between cores and wakes parked threads. On the project's
//! 2-core machine that costs the message-heavy benches 2–4×.
//!
//! Use it for real (non-simulated) nodes through
//! [`Spawner::Pool`](super::Spawner::Pool); simulated nodes use the host's
//! runtime ([`Spawner::Ambient`](super::Spawner::Ambient)).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

/// Most schedulers a pool may have: four per core. More only adds threads
/// that take turns on the same cores.
pub fn schedulers_max() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) * 4
}

/// Why a [`SchedulerPool`] did not start.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The number of schedulers is outside `1..=max` ([`schedulers_max`]).
    #[error("a scheduler pool takes 1..={max} schedulers (four per core), not {asked}")]
    Schedulers {
        /// The number asked for.
        asked: usize,
        /// [`schedulers_max`] on this machine.
        max: usize,
    },
    /// The OS refused a scheduler's thread or runtime.
    #[error("starting a scheduler: {0}")]
    Start(#[from] io::Error),
}

/// Pool ids, never reused (an address could be, after a pool is dropped,
/// while a blocking thread of the old pool still runs). 0 means "no pool".
static POOL_IDS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// (pool id, scheduler index) of the pool thread this is, if any.
    static CURRENT: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// This scheduler's balancing window (see the module docs).
    static BALANCE: Balance = const { Balance::new() };
}

/// Polls per balancing window while this scheduler's polls are light.
pub const BALANCE_WINDOW: u32 = 16;
/// Polls per window once a window was heavy: a loaded scheduler looks
/// again soon (its polls are long, so the clock reads cost nothing).
pub const HEAVY_WINDOW: u32 = 4;
/// A process that moved runs this many polls where it landed before it can
/// move again.
pub const SETTLE_POLLS: u8 = 2;
/// A window whose polls average this long is heavy.
pub const HEAVY_POLL: std::time::Duration = std::time::Duration::from_micros(20);

/// The calling thread's CPU time (zero where the clock is missing).
fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One scheduler thread's balancing state.
struct Balance {
    polls: Cell<u32>,
    window_start: Cell<Option<std::time::Instant>>,
    /// This thread's CPU time at the end of the last window, read only when
    /// that window looked heavy by the wall clock (`None` otherwise).
    cpu_at: Cell<Option<std::time::Duration>>,
    /// Windows in a row confirmed heavy by the CPU time.
    heavy: Cell<u8>,
    /// The scheduler to export to during this window (`usize::MAX`: none).
    export_to: Cell<usize>,
    /// Alternates while exporting: every other settled process moves.
    flip: Cell<bool>,
    /// The other schedulers' park counters at the last look.
    seen: std::cell::RefCell<Vec<u64>>,
}

impl Balance {
    const fn new() -> Self {
        Self {
            polls: Cell::new(0),
            window_start: Cell::new(None),
            cpu_at: Cell::new(None),
            heavy: Cell::new(0),
            export_to: Cell::new(usize::MAX),
            flip: Cell::new(false),
            seen: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// The thread woke from a park: what ran before says nothing now.
    fn reset(&self) {
        self.polls.set(0);
        self.window_start.set(None);
        self.cpu_at.set(None);
        self.heavy.set(0);
        self.export_to.set(usize::MAX);
    }
}

/// A fixed set of scheduler threads. Dropping the pool stops them; the
/// processes still on them end as killed. A node's live processes hold the
/// node, and so its pool: shut the node down (`Node::shutdown`) to end them.
pub struct SchedulerPool {
    handles: Vec<Handle>,
    /// Per scheduler, parks and unparks counted by its hooks: odd while it
    /// is parked (idle); a change means it was idle at some point.
    parks: Arc<[AtomicU64]>,
    next: AtomicUsize,
    runtimes: Vec<Runtime>,
    /// Identifies the pool to its threads (see `CURRENT`).
    id: usize,
    /// Processes move between schedulers (see [`SchedulerPool::migrating`]).
    migrate: bool,
}

impl std::fmt::Debug for SchedulerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SchedulerPool({} schedulers)", self.handles.len())
    }
}

impl SchedulerPool {
    /// Starts `schedulers` schedulers (1..=[`schedulers_max`]), each a tokio
    /// runtime with one worker thread, time and I/O enabled. (Its blocking
    /// threads, if any, count as that scheduler for placement.) Processes
    /// stay where they were placed: see [`SchedulerPool::migrating`].
    pub fn new(schedulers: usize) -> Result<Arc<Self>, PoolError> {
        Self::start(schedulers, false)
    }

    /// A pool whose schedulers move processes from a loaded scheduler to an
    /// idle one (see the module docs). The cost, measured by `foundation
    /// bench` on the project's machine: each process's body is boxed
    /// (`process.idle_bytes` 466 → 596 B) and a spawn allocates once more.
    pub fn migrating(schedulers: usize) -> Result<Arc<Self>, PoolError> {
        Self::start(schedulers, true)
    }

    /// Whether processes spawned on this pool can move (see
    /// [`SchedulerPool::migrating`]).
    pub fn migrates(&self) -> bool {
        self.migrate
    }

    fn start(schedulers: usize, migrate: bool) -> Result<Arc<Self>, PoolError> {
        let max = schedulers_max();
        if schedulers == 0 || schedulers > max {
            return Err(PoolError::Schedulers { asked: schedulers, max });
        }
        let id = POOL_IDS.fetch_add(1, Ordering::Relaxed);
        let parks: Arc<[AtomicU64]> = (0..schedulers).map(|_| AtomicU64::new(0)).collect();
        let runtimes = (0..schedulers)
            .map(|index| {
                let mut builder = Builder::new_multi_thread();
                builder
                    .worker_threads(1)
                    .thread_name(format!("foundation-sched-{index}"))
                    .on_thread_start(move || CURRENT.with(|c| c.set((id, index))))
                    .enable_all();
                // Only a migrating pool looks at parks: a fixed one pays
                // nothing per park.
                if migrate {
                    let (on_park, on_unpark) = (parks.clone(), parks.clone());
                    builder
                        .on_thread_park(move || {
                            on_park[index].fetch_add(1, Ordering::Relaxed);
                        })
                        .on_thread_unpark(move || {
                            on_unpark[index].fetch_add(1, Ordering::Relaxed);
                            BALANCE.with(Balance::reset);
                        });
                }
                builder.build()
            })
            .collect::<io::Result<Vec<_>>>()?;
        let handles = runtimes.iter().map(|rt| rt.handle().clone()).collect();
        Ok(Arc::new(Self { handles, parks, next: AtomicUsize::new(0), runtimes, id, migrate }))
    }

    /// The schedulers' runtime handles, in order.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Number of schedulers.
    pub fn schedulers(&self) -> usize {
        self.handles.len()
    }

    /// The index of the scheduler this thread is, if it is one of this pool's.
    pub fn current(&self) -> Option<usize> {
        let (address, index) = CURRENT.with(Cell::get);
        (address == self.id).then_some(index)
    }

    /// Called by a process's task before each poll on this pool: the
    /// scheduler to move the process to first, if this one is exporting
    /// (see the module docs).
    /// `settled`: whether the process has run here long enough since it
    /// last moved to be moved again (no bouncing).
    pub(crate) fn export_target(&self, settled: bool) -> Option<usize> {
        let (pool, me) = CURRENT.with(Cell::get);
        if pool != self.id {
            return None;
        }
        BALANCE.with(|b| {
            let polls = b.polls.get() + 1;
            let window = if b.cpu_at.get().is_some() { HEAVY_WINDOW } else { BALANCE_WINDOW };
            if polls < window {
                b.polls.set(polls);
            } else {
                b.polls.set(0);
                let now = std::time::Instant::now();
                let long = b.window_start.get().is_some_and(|start| now - start >= HEAVY_POLL * window);
                b.window_start.set(Some(now));
                // The wall clock also counts time the thread was preempted:
                // a window that looks heavy is confirmed by the thread's CPU
                // time (a system call, so only then) over the next one.
                let (cpu_at, heavy) = if long {
                    let cpu = thread_cpu_time();
                    (Some(cpu), b.cpu_at.get().is_some_and(|before| cpu.saturating_sub(before) >= HEAVY_POLL * window))
                } else {
                    (None, false)
                };
                b.cpu_at.set(cpu_at);
                // Two in a row: one slow page fault or burst is not a load.
                let streak = if heavy { b.heavy.get().saturating_add(1) } else { 0 };
                b.heavy.set(streak);
                let to = if streak >= 2 { self.idle_sibling(me, &b.seen) } else { None };
                b.export_to.set(to.unwrap_or(usize::MAX));
            }
            let to = b.export_to.get();
            if to == usize::MAX || !settled {
                return None;
            }
            let flip = !b.flip.get();
            b.flip.set(flip);
            flip.then_some(to)
        })
    }

    /// Another scheduler that is parked now or was since the last look
    /// (its park counter moved): it has room for work.
    fn idle_sibling(&self, me: usize, seen: &std::cell::RefCell<Vec<u64>>) -> Option<usize> {
        let mut seen = seen.borrow_mut();
        seen.resize(self.parks.len(), 0);
        let mut found = None;
        for (i, (parks, last)) in self.parks.iter().zip(seen.iter_mut()).enumerate() {
            let now = parks.load(Ordering::Relaxed);
            if i != me && found.is_none() && (now % 2 == 1 || now != *last) {
                found = Some(i);
            }
            *last = now;
        }
        found
    }

    /// Spawns on the calling scheduler, or round-robin from elsewhere.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let index = self.current().unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len());
        self.handles[index].spawn(fut)
    }

    /// Spawns on the next scheduler in turn, wherever it is called from.
    pub fn spawn_round_robin<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()].spawn(fut)
    }

    /// Spawns on scheduler `index` (to spread work the pool would otherwise
    /// keep together); `None` if there is no such scheduler.
    pub fn spawn_on<F>(&self, index: usize, fut: F) -> Option<JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Some(self.handles.get(index)?.spawn(fut))
    }
}

impl Drop for SchedulerPool {
    fn drop(&mut self) {
        // In the background: the last reference may drop inside one of the
        // pool's own tasks, where a blocking shutdown would panic. The
        // processes still on the schedulers are dropped (they end killed).
        for rt in self.runtimes.drain(..) {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawns_stay_on_the_calling_scheduler_and_spread_from_outside() {
        let pool = SchedulerPool::new(2).expect("two threads");
        let name = || std::thread::current().name().map(str::to_owned);
        let outside: Vec<_> = (0..4)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                pool.spawn(async move { tx.send(name()).unwrap() });
                rx.recv().unwrap()
            })
            .collect();
        assert_eq!(outside.iter().flatten().collect::<std::collections::BTreeSet<_>>().len(), 2, "round-robin from outside: {outside:?}");
        let (tx, rx) = std::sync::mpsc::channel();
        let inner_pool = pool.clone();
        pool.spawn(async move {
            let parent = name();
            let (ctx, crx) = tokio::sync::oneshot::channel();
            inner_pool.spawn(async move { ctx.send(name()).unwrap() });
            tx.send((parent, crx.await.unwrap())).unwrap();
        });
        let (parent, child) = rx.recv().unwrap();
        assert_eq!(parent, child, "a child spawned on a scheduler stays there");
    }

    #[test]
    fn more_than_four_schedulers_per_core_is_a_configuration_error() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let Err(err) = SchedulerPool::new(4 * cores + 1) else { panic!("more than four schedulers per core are refused") };
        assert!(err.to_string().contains(&format!("1..={}", 4 * cores)), "{err}");
        assert!(SchedulerPool::new(cores).is_ok(), "one per core is fine");
    }

    #[test]
    fn dropping_the_pool_stops_its_threads_and_refuses_zero() {
        assert!(SchedulerPool::new(0).is_err());
        let pool = SchedulerPool::new(1).expect("a thread");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        pool.spawn(async move {
            std::future::pending::<()>().await;
            drop(tx);
        });
        drop(pool);
        // The pending task was dropped with its runtime, so the sender is gone.
        assert!(rx.recv().is_err());
    }
}
