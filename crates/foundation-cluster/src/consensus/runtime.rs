//! openraft's runtime with a seeded RNG.
//!
//! openraft draws election timeouts and tick jitter from
//! `AsyncRuntime::thread_rng()`; tokio's runtime answers with the OS's
//! randomness, so two simulated runs of one seed elect different leaders.
//! [`SeededTokio`] is tokio's runtime with that one call replaced: the seed
//! lives in a task-local that [`scope`] installs around `Raft::new`, and
//! every task openraft spawns from inside it inherits a seed derived from
//! its parent's (SplitMix64, with different constants for "the child's
//! seed" and "the parent's next seed", so the two streams never meet).
//!
//! Outside a scope (openraft spawning from a caller's task, which the calls
//! Foundation makes do not do) the seed comes from a process-wide counter:
//! still no OS randomness, merely not tied to the node's seed.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::rt::{AsyncRuntime, Mpsc, OptionalSend, TryRecvError};
use openraft_rt_tokio::TokioRuntime;
use rand10::SeedableRng;
use rand10::rngs::SmallRng;

tokio::task_local! {
    static SEED: Cell<u64>;
}

const CHILD: u64 = 0x9e37_79b9_7f4a_7c15;
const NEXT: u64 = 0x6a09_e667_f3bc_c908;

/// Seeds for calls made outside any [`scope`].
static UNSCOPED: AtomicU64 = AtomicU64::new(0x5eed);

fn splitmix64(seed: u64, gamma: u64) -> u64 {
    let z = seed.wrapping_add(gamma);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The current task's seed, advanced; or an unscoped one.
fn draw() -> u64 {
    SEED.try_with(|c| {
        let s = c.get();
        c.set(splitmix64(s, NEXT));
        s
    })
    .unwrap_or_else(|_| splitmix64(UNSCOPED.fetch_add(1, Ordering::Relaxed), NEXT))
}

/// Runs `fut` with `seed` as the task's seed: what openraft spawns inside it
/// (its core, tick, state machine and replication tasks) draws from it.
pub fn scope<F: Future>(seed: u64, fut: F) -> impl Future<Output = F::Output> {
    SEED.scope(Cell::new(seed), fut)
}

/// tokio's runtime for openraft, with a seeded `thread_rng`.
#[derive(Debug)]
pub struct SeededTokio(TokioRuntime);

impl AsyncRuntime for SeededTokio {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;
    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = super::watch::OrderedWatch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        let child = splitmix64(draw(), CHILD);
        foundation::rt::spawn(SEED.scope(Cell::new(child), future))
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SmallRng::seed_from_u64(draw())
    }

    fn new(threads: usize) -> Self {
        Self(TokioRuntime::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let handle = foundation::rt::spawn_blocking(f);
        async move { handle.await.map_err(io::Error::other) }
    }

    fn mpsc_recv_deadline<T: OptionalSend>(
        receiver: &mut <Self::Mpsc as Mpsc>::Receiver<T>,
        deadline: Self::Instant,
    ) -> impl Future<Output = Result<T, TryRecvError>> + OptionalSend {
        TokioRuntime::mpsc_recv_deadline(receiver, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand10::RngExt as _;

    async fn draws() -> Vec<u64> {
        let mut out = vec![SeededTokio::thread_rng().random::<u64>()];
        let child = SeededTokio::spawn(async { SeededTokio::thread_rng().random::<u64>() });
        out.push(child.await.expect("child"));
        out.push(SeededTokio::thread_rng().random::<u64>());
        out
    }

    #[tokio::test]
    async fn one_seed_one_stream_and_children_differ_from_parents() {
        let a = scope(7, draws()).await;
        assert_eq!(a, scope(7, draws()).await);
        assert_ne!(a, scope(8, draws()).await);
        assert_ne!(a[0], a[1]);
        assert_ne!(a[1], a[2]);
    }
}
