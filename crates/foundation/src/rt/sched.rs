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
//! while another scheduler was idle since the last look (parked now, or its
//! park counter moved), make that one this scheduler's partner: for each
//! window that starts with the partner holding fewer than [`FEED`]
//! processes moved to it that have not run there yet (their count is
//! `arrivals`), every other process about to be polled here moves to it first
//! (its body is boxed, so its task can end and a new one continue it there;
//! see `process::Roaming`), unless it moved less than [`SETTLE_POLLS`]
//! polls ago. The partner stays while this scheduler stays heavy, busy or
//! not: it is fed as fast as it runs what it got, and a partner with work
//! of its own runs what it got slowly, so it gets little. (Exporting only
//! while the other scheduler idled left it idle half the time:
//! `scheduler.fanout_parallelism` 1.47 of 2 cores.) Light polls, as in
//! message ping-pong, never export, so processes that talk to each other
//! stay together. The cost when nothing moves: a thread-local count per
//! poll and one clock read per window.
//!
//! Why: with tokio's work-stealing runtime, a supervisor's children and
//! their peers are spread over all workers, and every message then moves
//! cache lines between cores and wakes parked threads. On the project's
//! 2-core machine that costs the message-heavy benches 2–4×.
//!
//! Busy waiting: a scheduler that runs out of work keeps polling for I/O
//! and wake-ups for [`BUSY_WAIT`] before its thread sleeps, so a reply
//! from another core is picked up without a kernel wake-up (see
//! `sched/busy.rs`; [`PoolBuilder::busy_wait`] sets the window, zero turns
//! it off).
//!
//! Real (non-simulated) nodes run on one by default: the process-wide
//! [`SchedulerPool::shared`] ([`Spawner::Shared`](super::Spawner::Shared)),
//! or a pool of their own ([`Spawner::Pool`](super::Spawner::Pool)).
//! Simulated nodes use the host's runtime
//! ([`Spawner::Ambient`](super::Spawner::Ambient)).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

mod busy;
use busy::Counted;

/// Most schedulers a pool may have: four per core. More only adds threads
/// that take turns on the same cores.
pub fn schedulers_max() -> usize {
    cores() * 4
}

/// The machine's cores, as the OS reports them to this process (1 if it
/// cannot tell).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How long an idle scheduler keeps polling before its thread sleeps, by
/// default (see the module docs). Long enough for a loopback round trip
/// to another scheduler (15–20 µs on the project's machine) to come back
/// while it waits.
pub const BUSY_WAIT: Duration = Duration::from_micros(50);

/// The longest busy-wait window a pool takes.
pub const BUSY_WAIT_MAX: Duration = Duration::from_millis(10);

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
    /// The busy-wait window is over [`BUSY_WAIT_MAX`].
    #[error("a scheduler pool busy-waits at most {max:?} before sleeping, not {asked:?}")]
    BusyWait {
        /// The window asked for.
        asked: Duration,
        /// [`BUSY_WAIT_MAX`].
        max: Duration,
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
/// Exporting to a partner pauses while this many processes moved to it
/// have not run there yet: it has work queued.
pub const FEED: u32 = 2;
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
    /// The idle scheduler this one started exporting to, kept while this
    /// one stays heavy (`usize::MAX`: none); fed whenever its backlog of
    /// moved processes is short.
    partner: Cell<usize>,
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
            partner: Cell::new(usize::MAX),
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
        self.partner.set(usize::MAX);
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
    /// Per scheduler, processes moved to it that have not run there yet:
    /// its backlog, as far as exporting is concerned.
    arrivals: Box<[AtomicU32]>,
    next: AtomicUsize,
    runtimes: Vec<Runtime>,
    /// Identifies the pool to its threads (see `CURRENT`).
    id: usize,
    /// Processes move between schedulers (see [`SchedulerPool::migrating`]).
    migrate: bool,
    busy_wait: Duration,
}

/// Options for a [`SchedulerPool`]: `SchedulerPool::builder(n)`, then
/// [`PoolBuilder::start`].
#[derive(Clone, Debug)]
pub struct PoolBuilder {
    schedulers: usize,
    migrate: bool,
    busy_wait: Duration,
}

impl PoolBuilder {
    /// Whether processes move from a loaded scheduler to an idle one (see
    /// [`SchedulerPool::migrating`]). Default: no.
    pub fn migrating(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// How long an idle scheduler keeps polling for I/O and wake-ups
    /// before its thread sleeps (see the module docs): default
    /// [`BUSY_WAIT`], at most [`BUSY_WAIT_MAX`]; zero sleeps at once (no
    /// CPU spent while idle, slower wake-ups).
    pub fn busy_wait(mut self, window: Duration) -> Self {
        self.busy_wait = window;
        self
    }

    /// Starts the pool's threads.
    pub fn start(self) -> Result<Arc<SchedulerPool>, PoolError> {
        SchedulerPool::start(self)
    }
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
        Self::builder(schedulers).start()
    }

    /// A pool of `schedulers` with the default options, to change before
    /// [`PoolBuilder::start`].
    pub fn builder(schedulers: usize) -> PoolBuilder {
        PoolBuilder { schedulers, migrate: false, busy_wait: BUSY_WAIT }
    }

    /// A pool whose schedulers move processes from a loaded scheduler to an
    /// idle one (see the module docs). The cost, measured by `foundation
    /// bench` on the project's machine: each process's body is boxed (a
    /// spawn allocates once more; `process.migrating_idle_bytes` is 466 B,
    /// as `process.idle_bytes`) and a poll reads a thread-local count.
    pub fn migrating(schedulers: usize) -> Result<Arc<Self>, PoolError> {
        Self::builder(schedulers).migrating(true).start()
    }

    /// The process-wide pool: one migrating scheduler per core, started by
    /// the first call and shared by every later one (every node of this OS
    /// process that takes [`Spawner::Shared`](super::Spawner::Shared), the
    /// default), as a BEAM's schedulers are shared by its processes. Its
    /// threads live as long as the OS process. A start that fails (no
    /// threads) is not remembered: the next call tries again.
    pub fn shared() -> Result<Arc<Self>, PoolError> {
        static SHARED: parking_lot::Mutex<Option<Arc<SchedulerPool>>> = parking_lot::Mutex::new(None);
        let mut shared = SHARED.lock();
        if let Some(pool) = shared.as_ref() {
            return Ok(pool.clone());
        }
        let pool = Self::migrating(cores())?;
        *shared = Some(pool.clone());
        Ok(pool)
    }

    /// How long an idle scheduler of this pool busy-waits before sleeping.
    pub fn busy_wait(&self) -> Duration {
        self.busy_wait
    }

    /// Whether processes spawned on this pool can move (see
    /// [`SchedulerPool::migrating`]).
    pub fn migrates(&self) -> bool {
        self.migrate
    }

    fn start(options: PoolBuilder) -> Result<Arc<Self>, PoolError> {
        let PoolBuilder { schedulers, migrate, busy_wait } = options;
        let max = schedulers_max();
        if schedulers == 0 || schedulers > max {
            return Err(PoolError::Schedulers { asked: schedulers, max });
        }
        if busy_wait > BUSY_WAIT_MAX {
            return Err(PoolError::BusyWait { asked: busy_wait, max: BUSY_WAIT_MAX });
        }
        let id = POOL_IDS.fetch_add(1, Ordering::Relaxed);
        let parks: Arc<[AtomicU64]> = (0..schedulers).map(|_| AtomicU64::new(0)).collect();
        let spin = !busy_wait.is_zero();
        let wakes: Vec<Arc<Notify>> = (0..schedulers).map(|_| Arc::new(Notify::new())).collect();
        let runtimes = (0..schedulers)
            .map(|index| {
                let mut builder = Builder::new_multi_thread();
                builder
                    .worker_threads(1)
                    .thread_name(format!("foundation-sched-{index}"))
                    .on_thread_start(move || CURRENT.with(|c| c.set((id, index))))
                    .enable_all();
                // A migrating pool counts parks and unparks; a busy-waiting
                // one wakes its busy-wait task on unpark. A fixed pool that
                // sleeps at once pays nothing per park.
                if migrate {
                    let on_park = parks.clone();
                    builder.on_thread_park(move || {
                        on_park[index].fetch_add(1, Ordering::Relaxed);
                    });
                }
                if migrate || spin {
                    let (on_unpark, wake) = (parks.clone(), wakes[index].clone());
                    builder.on_thread_unpark(move || {
                        if migrate {
                            on_unpark[index].fetch_add(1, Ordering::Relaxed);
                            BALANCE.with(Balance::reset);
                        }
                        if spin {
                            wake.notify_one();
                        }
                    });
                }
                builder.build()
            })
            .collect::<io::Result<Vec<_>>>()?;
        if spin {
            // Not `Counted`: its own polls are not work.
            for (rt, wake) in runtimes.iter().zip(wakes) {
                rt.spawn(busy::busy_wait(wake, busy_wait));
            }
        }
        let handles = runtimes.iter().map(|rt| rt.handle().clone()).collect();
        let arrivals = (0..schedulers).map(|_| AtomicU32::new(0)).collect();
        Ok(Arc::new(Self { handles, parks, arrivals, next: AtomicUsize::new(0), runtimes, id, migrate, busy_wait }))
    }

    /// The schedulers' runtime handles, in order. (A task spawned on a
    /// handle directly, not through the pool, does not count as work for
    /// the busy wait: the scheduler may sleep while it runs in bursts.)
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
    ///
    /// Inlined: what most polls run is a pool id compare, a count and a
    /// read; a window's end and a move are out of line.
    #[inline]
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
                self.close_window(b, me, window);
            }
            let to = b.export_to.get();
            if to == usize::MAX || !settled {
                return None;
            }
            self.export_every_other(b, to)
        })
    }

    /// The end of a balancing window on scheduler `me`: is it heavy, and
    /// whom does it feed during the next one (see the module docs).
    #[cold]
    #[inline(never)]
    fn close_window(&self, b: &Balance, me: usize, window: u32) {
        b.polls.set(0);
        let now = std::time::Instant::now();
        let long = b.window_start.get().is_some_and(|start| now - start >= HEAVY_POLL * window);
        b.window_start.set(Some(now));
        // The wall clock also counts time the thread was preempted: a
        // window that looks heavy is confirmed by the thread's CPU time (a
        // system call, so only then) over the next one.
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
        // A partner is found idle; it stays the partner while this
        // scheduler stays heavy, and is fed whenever its backlog is short,
        // busy or not (waiting for it to idle again left it idle half the
        // time).
        let idle = self.idle_sibling(me, &b.seen);
        let partner = match (streak >= 2, b.partner.get()) {
            (false, _) => usize::MAX,
            (true, usize::MAX) => idle.unwrap_or(usize::MAX),
            (true, partner) => partner,
        };
        b.partner.set(partner);
        let fed = partner != usize::MAX && self.arrivals[partner].load(Ordering::Relaxed) < FEED;
        b.export_to.set(if fed { partner } else { usize::MAX });
    }

    /// While exporting to `to`: every other settled process moves, counted
    /// in `to`'s backlog.
    #[cold]
    #[inline(never)]
    fn export_every_other(&self, b: &Balance, to: usize) -> Option<usize> {
        let flip = !b.flip.get();
        b.flip.set(flip);
        if flip {
            self.arrivals[to].fetch_add(1, Ordering::Relaxed);
        }
        flip.then_some(to)
    }

    /// Called by a process's task that moved to scheduler `to` when it first
    /// runs there (or is dropped before): it leaves that scheduler's backlog.
    pub(crate) fn arrived(&self, to: usize) {
        // Counted by `export_target` before the task was spawned.
        self.arrivals[to].fetch_sub(1, Ordering::Relaxed);
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
        self.handles[index].spawn(Counted(fut))
    }

    /// Spawns on the next scheduler in turn, wherever it is called from.
    pub fn spawn_round_robin<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()].spawn(Counted(fut))
    }

    /// Spawns on scheduler `index` (to spread work the pool would otherwise
    /// keep together); `None` if there is no such scheduler.
    pub fn spawn_on<F>(&self, index: usize, fut: F) -> Option<JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Some(self.handles.get(index)?.spawn(Counted(fut)))
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

    /// Of twenty 1 ms sleeps of a task alone on a scheduler, how many ended
    /// with the scheduler's thread never parked (tokio's park count, which
    /// a busy wait's polls do not move).
    fn sleeps_without_a_park(pool: &SchedulerPool) -> usize {
        let (tx, rx) = std::sync::mpsc::channel();
        pool.spawn(async move {
            let metrics = Handle::current().metrics();
            let mut awake = 0;
            for _ in 0..20 {
                let parks = metrics.worker_park_count(0);
                tokio::time::sleep(Duration::from_millis(1)).await;
                awake += usize::from(metrics.worker_park_count(0) == parks);
            }
            tx.send((awake, metrics.worker_park_count(0))).unwrap();
        });
        let (awake, parks) = rx.recv().unwrap();
        // Bounded: once the task is done, the thread sleeps within the
        // window (it parks again, and nothing else wakes it).
        let metrics = pool.handles()[0].metrics();
        let parked = || metrics.worker_park_count(0) > parks;
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(foundation_testutil::assert_eventually(
            "the idle scheduler sleeps",
            parked,
            Duration::from_secs(10),
        ));
        awake
    }

    #[test]
    fn an_idle_scheduler_polls_through_its_busy_wait_and_then_sleeps() {
        let spinning = SchedulerPool::builder(1).busy_wait(BUSY_WAIT_MAX).start().expect("a thread");
        assert_eq!(spinning.busy_wait(), BUSY_WAIT_MAX);
        // Under load the OS may preempt the thread past a window; one sleep
        // caught awake shows the wait works, and most are.
        assert!(sleeps_without_a_park(&spinning) > 0, "a 1 ms sleep inside a 10 ms busy wait ends without a park");
        let sleeping = SchedulerPool::builder(1).busy_wait(Duration::ZERO).start().expect("a thread");
        assert_eq!(sleeps_without_a_park(&sleeping), 0, "without a busy wait every sleep parks the thread");
    }

    #[test]
    fn a_busy_wait_over_the_max_is_a_configuration_error() {
        let over = BUSY_WAIT_MAX + Duration::from_micros(1);
        let Err(err) = SchedulerPool::builder(1).busy_wait(over).start() else { panic!("refused") };
        assert!(matches!(err, PoolError::BusyWait { asked, max } if asked == over && max == BUSY_WAIT_MAX), "{err}");
        assert_eq!(SchedulerPool::new(1).expect("a thread").busy_wait(), BUSY_WAIT);
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
