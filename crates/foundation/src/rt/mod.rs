//! The runtime seam: every piece of Foundation above this module takes
//! spawning, time, randomness and the network from here, never directly from
//! tokio, `std::time::SystemTime`, `rand::thread_rng()` or tokio sockets.
//!
//! Today the seam has one real implementation (tokio on the host's clock and
//! sockets). The test kit plugs a simulated clock and network in behind the
//! same types, which is what lets a whole cluster replay exactly from a seed.
//!
//! - **spawn**: [`Rt::spawn`] puts a task where the node's processes run:
//!   by default the process-wide migrating [`SchedulerPool::shared`]
//!   ([`Spawner::Shared`]), a pool of the node's own ([`Spawner::Pool`]),
//!   or the current tokio runtime ([`Spawner::Ambient`]; simulated hosts run
//!   their own, and a default node made on one uses it).
//! - **time**: [`Rt::now`] (monotonic, tokio's clock, which simulations drive)
//!   and [`Rt::system_time`] (wall clock: real, or `epoch + elapsed` under
//!   simulation). [`sleep`] and [`timeout`] are tokio's, re-exported so call
//!   sites name the seam.
//! - **randomness**: [`Rt::with_rng`] and [`Rt::fork_rng`], a per-node RNG seeded from [`RtConfig::seed`].
//! - **network**: the [`Network`] trait ([`net`]) with [`TokioNetwork`].
//!
//! ```
//! # tokio_test_block_on(async {
//! use foundation::rt::{Rt, RtConfig};
//! let rt = Rt::new(RtConfig { seed: 7, ..RtConfig::default() });
//! let a: u64 = rt.with_rng(|r| rand::Rng::random(r));
//! let b: u64 = Rt::new(RtConfig { seed: 7, ..RtConfig::default() }).with_rng(|r| rand::Rng::random(r));
//! assert_eq!(a, b, "same seed, same stream");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

pub(crate) mod deadline;
mod local;
pub mod net;
pub mod sched;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub use local::{SpawnLocally, spawn_locally, take_task_panic};
pub use net::{BoxStream, Listener, Network, TokioNetwork};
pub use sched::{BUSY_WAIT, BUSY_WAIT_MAX, PoolBuilder, PoolError, SchedulerPool, schedulers_max};
pub use tokio::task::JoinHandle;
pub use tokio::time::{Instant, sleep, sleep_until, timeout};

/// Spawns a task on the current runtime (real or simulated host).
///
/// On a thread inside [`spawn_locally`], the task goes on the current
/// `LocalSet` instead (where a simulator runs each host).
///
/// # Panics
/// Outside a tokio runtime, like `tokio::spawn`; inside [`spawn_locally`],
/// outside a `LocalSet`.
#[inline]
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if local::spawning_locally() {
        return local::spawn(fut);
    }
    #[allow(clippy::disallowed_methods)] // the seam itself
    tokio::spawn(fut)
}

/// Runs blocking work on tokio's blocking pool (the seam's one door to it:
/// simulation cannot run OS threads, so nothing else calls
/// `spawn_blocking`).
pub fn spawn_blocking<F, R>(work: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    #[allow(clippy::disallowed_methods)]
    tokio::task::spawn_blocking(work)
}

/// The runtime a piece of work was set up on, for a thread outside it to
/// hand it futures: an OpenTelemetry export thread sending over this
/// runtime's sockets (`foundation_cluster::traces`). Never made under
/// [`spawn_locally`] (a simulator's host has no runtime of its own).
#[derive(Clone, Debug)]
pub struct Remote(tokio::runtime::Handle);

impl Remote {
    /// The runtime of the calling thread; `None` outside one.
    pub fn current() -> Option<Self> {
        tokio::runtime::Handle::try_current().ok().map(Self)
    }

    /// Spawns `fut` on that runtime, from any thread.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.spawn(fut)
    }
}

/// Where wall-clock time comes from.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// The host's clock (`SystemTime::now()`).
    Real,
    /// A simulated clock: `epoch` plus the monotonic time elapsed since
    /// `start`. Under a simulator the monotonic clock is virtual, so the wall
    /// clock is too, and two runs of one seed read the same times.
    Simulated {
        /// Wall-clock time at `start`.
        epoch: SystemTime,
        /// The monotonic instant that corresponds to `epoch`.
        start: Instant,
    },
}

/// Where a node's processes run.
#[derive(Clone, Debug, Default)]
pub enum Spawner {
    /// On the process-wide [`SchedulerPool::shared`]: one migrating
    /// scheduler per core, shared by every node of the OS process. A
    /// process starts next to its spawner and moves when its scheduler is
    /// loaded and another idles. Under [`spawn_locally`] (a simulated host)
    /// this is [`Spawner::Ambient`]: the simulator's runtime, where a seed
    /// replays. Should the pool's threads fail to start, the node warns and
    /// runs its processes on the ambient runtime.
    #[default]
    Shared,
    /// On the tokio runtime that spawns them (its work-stealing workers, or
    /// a simulated host's runtime).
    Ambient,
    /// On a [`SchedulerPool`]: next to the spawning process, round-robin
    /// from outside.
    Pool(Arc<SchedulerPool>),
}

/// Where unpredictable bytes (handshake challenges, tokens) come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Entropy {
    /// The OS CSPRNG (`getrandom`): what every real node uses.
    #[default]
    Os,
    /// The node's seeded RNG: for simulations, so that a seed replays its
    /// handshakes exactly. Predictable by design; never for a real network.
    Seeded,
}

/// How to build an [`Rt`].
#[derive(Clone)]
pub struct RtConfig {
    /// Seed of the node's RNG. Two nodes with one seed draw one stream.
    pub seed: u64,
    /// Wall-clock source.
    pub clock: Clock,
    /// The network this node binds and connects through.
    pub network: Arc<dyn Network>,
    /// Where processes run.
    pub spawner: Spawner,
    /// Where [`Rt::fill_secure`] takes its bytes.
    pub entropy: Entropy,
}

impl Default for RtConfig {
    fn default() -> Self {
        Self { seed: 0, clock: Clock::Real, network: Arc::new(TokioNetwork), spawner: Spawner::Shared, entropy: Entropy::Os }
    }
}

impl fmt::Debug for RtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtConfig")
            .field("seed", &self.seed)
            .field("clock", &self.clock)
            .field("spawner", &self.spawner)
            .field("entropy", &self.entropy)
            .finish()
    }
}

/// One node's view of the runtime: clock, seeded RNG and network.
///
/// Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Rt {
    inner: Arc<RtInner>,
}

struct RtInner {
    seed: u64,
    clock: Clock,
    /// Milliseconds added to the wall clock ([`Rt::set_clock_offset`]).
    offset_ms: AtomicI64,
    rng: Mutex<StdRng>,
    network: Arc<dyn Network>,
    /// Where processes run: a pool, or (`None`) the ambient runtime.
    pool: Option<Arc<SchedulerPool>>,
    entropy: Entropy,
    /// The shared timer of waits with a deadline (`deadline.rs`).
    deadlines: Arc<deadline::Deadlines>,
}

impl fmt::Debug for Rt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rt").field("seed", &self.inner.seed).field("clock", &self.inner.clock).finish()
    }
}

impl Rt {
    /// Builds the seam from a config.
    pub fn new(config: RtConfig) -> Self {
        let rng = Mutex::new(StdRng::seed_from_u64(config.seed));
        let pool = match config.spawner {
            Spawner::Shared if local::spawning_locally() => None,
            Spawner::Shared => SchedulerPool::shared()
                .inspect_err(
                    |e| tracing::warn!(error = %e, "the shared scheduler pool did not start; processes run on the ambient runtime"),
                )
                .ok(),
            Spawner::Ambient => None,
            Spawner::Pool(pool) => Some(pool),
        };
        let inner = RtInner {
            seed: config.seed,
            clock: config.clock,
            offset_ms: AtomicI64::new(0),
            rng,
            network: config.network,
            pool,
            entropy: config.entropy,
            deadlines: deadline::Deadlines::new(matches!(config.clock, Clock::Real)),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The seed this node's RNG started from (print it to replay a run).
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// Monotonic time (tokio's clock; virtual under simulation).
    #[inline]
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Wall-clock time, from the configured [`Clock`], plus the offset
    /// set by [`Rt::set_clock_offset`] (zero unless a test skews it).
    pub fn system_time(&self) -> SystemTime {
        let now = match self.inner.clock {
            // The one place above the OS where SystemTime::now() is allowed.
            #[allow(clippy::disallowed_methods)]
            Clock::Real => SystemTime::now(),
            Clock::Simulated { epoch, start } => epoch + Instant::now().saturating_duration_since(start),
        };
        let offset = self.inner.offset_ms.load(Ordering::Relaxed);
        let by = Duration::from_millis(offset.unsigned_abs());
        if offset >= 0 { now + by } else { now.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH) }
    }

    /// Skews this node's wall clock by `offset_ms` milliseconds (negative:
    /// behind) from now on, as a machine whose clock is off would be; 0
    /// puts it right. Only [`Rt::system_time`] moves: monotonic time and
    /// timers do not. This is the test kit's clock-skew fault (nodes of one
    /// process each have their own `Rt`, so each its own skew).
    ///
    /// ```
    /// use foundation::rt::{Rt, RtConfig};
    /// let rt = Rt::new(RtConfig::default());
    /// let before = rt.unix_millis();
    /// rt.set_clock_offset(3_600_000);
    /// assert!(rt.unix_millis() >= before + 3_600_000);
    /// assert_eq!(rt.clock_offset(), 3_600_000);
    /// ```
    pub fn set_clock_offset(&self, offset_ms: i64) {
        self.inner.offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    /// The skew set by [`Rt::set_clock_offset`], in milliseconds.
    pub fn clock_offset(&self) -> i64 {
        self.inner.offset_ms.load(Ordering::Relaxed)
    }

    /// Milliseconds since the Unix epoch, from [`Rt::system_time`].
    pub fn unix_millis(&self) -> u64 {
        let since = self.system_time().duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `f` with the node's seeded RNG.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self.inner.rng.lock())
    }

    /// Fills `buf` with unpredictable bytes: from the OS CSPRNG, or under
    /// [`Entropy::Seeded`] from the node's seeded RNG (a simulation replays
    /// them). Handshake challenges come from here, never from
    /// [`Rt::with_rng`], whose seed is 0 unless one is given.
    ///
    /// ```
    /// use foundation::rt::{Rt, RtConfig};
    /// let rt = Rt::new(RtConfig::default());
    /// let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    /// rt.fill_secure(&mut a);
    /// rt.fill_secure(&mut b);
    /// assert_ne!(a, b);
    /// ```
    pub fn fill_secure(&self, buf: &mut [u8]) {
        match self.inner.entropy {
            // Without OS randomness a node cannot authenticate safely; that
            // is a broken host, not an error to carry on from.
            Entropy::Os => getrandom::fill(buf).expect("the OS CSPRNG is available"),
            Entropy::Seeded => self.with_rng(|r| r.fill_bytes(buf)),
        }
    }

    /// A fresh RNG derived from the node's stream (for a component that wants
    /// its own, e.g. a backoff schedule), still determined by the seed.
    #[must_use = "forking draws from the node's stream; an unused fork only shifts it"]
    pub fn fork_rng(&self) -> StdRng {
        self.with_rng(StdRng::from_rng)
    }

    /// The node's network.
    pub fn network(&self) -> &Arc<dyn Network> {
        &self.inner.network
    }

    /// Arms a deadline `after` from now on the node's shared timer for
    /// `entry` (a reply's slot: `Addr::call` and `Addr::request`), costing
    /// no tokio timer of its own. Starts the timer task if none runs.
    pub(crate) fn arm_deadline(&self, after: Duration, entry: Arc<dyn deadline::Expire>) {
        if let Some(task) = self.inner.deadlines.timer_if_stopped() {
            drop(self.spawn(task));
        }
        self.inner.deadlines.arm(after, entry);
    }

    /// Spawns a task where this node's processes run (see [`Spawner`]).
    #[inline]
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.inner.pool {
            None => spawn(fut),
            Some(pool) => pool.spawn(fut),
        }
    }

    /// Spawns away from the caller: on the pool's next scheduler in turn,
    /// or, without a pool, where the ambient runtime puts it (see
    /// `SpawnOpts::spread`).
    pub fn spawn_spread<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.inner.pool {
            None => spawn(fut),
            Some(pool) => pool.spawn_round_robin(fut),
        }
    }

    /// The node's scheduler pool, if it has one.
    pub(crate) fn pool(&self) -> Option<&Arc<SchedulerPool>> {
        self.inner.pool.as_ref()
    }

    /// Schedulers the node's processes can be placed on (0: the ambient
    /// runtime, where placement has no meaning).
    pub fn schedulers(&self) -> usize {
        self.inner.pool.as_ref().map_or(0, |pool| pool.schedulers())
    }

    /// Per-worker busy time of the runtime(s) running this node's processes:
    /// the pool's schedulers, or the current runtime.
    pub fn utilization_sample(&self) -> crate::schedulers::UtilizationSample {
        match &self.inner.pool {
            None => crate::schedulers::UtilizationSample::current(),
            Some(pool) => crate::schedulers::UtilizationSample::of(pool.handles()),
        }
    }

    /// Spawns on scheduler `index` of the node's pool; gives the future back
    /// if there is no such scheduler (or no pool).
    pub fn spawn_on<F>(&self, index: usize, fut: F) -> Result<JoinHandle<F::Output>, F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.inner.pool {
            Some(pool) if index < pool.schedulers() => Ok(pool.spawn_on(index, fut).expect("index checked")),
            _ => Err(fut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let draw = |seed| {
            let rt = Rt::new(RtConfig { seed, ..RtConfig::default() });
            (0..8).map(|_| rt.with_rng(|r| r.random::<u64>())).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_clock_follows_virtual_time() {
        let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let rt = Rt::new(RtConfig { clock: Clock::Simulated { epoch, start: Instant::now() }, ..RtConfig::default() });
        assert_eq!(rt.system_time(), epoch);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(rt.system_time(), epoch + Duration::from_secs(5));
        assert_eq!(rt.unix_millis(), 1_000_005_000);
    }
}
