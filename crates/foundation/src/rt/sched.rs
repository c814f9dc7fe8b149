//! A pool of schedulers, the BEAM's way: one tokio runtime with a single
//! worker thread per scheduler, and processes that stay where they were
//! spawned. (A one-worker multi-thread runtime, not a current-thread one:
//! its LIFO slot runs a woken process next, which is what message passing
//! wants; the current-thread scheduler was 2× slower on request/ack.)
//!
//! Placement: a spawn from one of the pool's threads runs on that same
//! scheduler (a supervisor's children sit next to it, and their messages
//! never cross cores); a spawn from anywhere else goes round-robin. There is
//! no migration: a scheduler keeps the processes placed on it for life.
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
use std::sync::atomic::{AtomicUsize, Ordering};

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
}

/// A fixed set of scheduler threads. Dropping the pool stops them; the
/// processes still on them end as killed. A node's live processes hold the
/// node, and so its pool: shut the node down (`Node::shutdown`) to end them.
pub struct SchedulerPool {
    handles: Vec<Handle>,
    next: AtomicUsize,
    runtimes: Vec<Runtime>,
    /// Identifies the pool to its threads (see `CURRENT`).
    id: usize,
}

impl std::fmt::Debug for SchedulerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SchedulerPool({} schedulers)", self.handles.len())
    }
}

impl SchedulerPool {
    /// Starts `schedulers` schedulers (1..=[`schedulers_max`]), each a tokio
    /// runtime with one worker thread, time and I/O enabled. (Its blocking
    /// threads, if any, count as that scheduler for placement.)
    pub fn new(schedulers: usize) -> Result<Arc<Self>, PoolError> {
        let max = schedulers_max();
        if schedulers == 0 || schedulers > max {
            return Err(PoolError::Schedulers { asked: schedulers, max });
        }
        let id = POOL_IDS.fetch_add(1, Ordering::Relaxed);
        let runtimes = (0..schedulers)
            .map(|index| {
                Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("foundation-sched-{index}"))
                    .on_thread_start(move || CURRENT.with(|c| c.set((id, index))))
                    .enable_all()
                    .build()
            })
            .collect::<io::Result<Vec<_>>>()?;
        let handles = runtimes.iter().map(|rt| rt.handle().clone()).collect();
        Ok(Arc::new(Self { handles, next: AtomicUsize::new(0), runtimes, id }))
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
