//! Busy waiting before a scheduler sleeps, the BEAM's `+sbwt`: when a
//! scheduler runs out of work it keeps polling for I/O, timers and
//! wake-ups for a short window before its thread sleeps.
//!
//! Why: a sleeping thread is woken by the kernel on another core, which on
//! a virtual machine costs tens of microseconds per wake-up (the idle vCPU
//! halted). A request sent to another scheduler and answered within the
//! window is picked up by the awake thread instead: `remote.rpc_rtt_p50`
//! across two schedulers went from 90–114 µs to 15–18 µs on the project's
//! machine.
//!
//! How: each scheduler runs one [`busy_wait`] task, woken by the runtime's
//! unpark hook. While it is the only runnable task it yields, and a
//! yielded task makes tokio's worker poll its driver (I/O and timers)
//! without blocking, then run what became ready, then the yielder again.
//! Every other task on the pool counts its polls in [`WORK`] (see
//! [`Counted`]); the window restarts whenever that count moved, and once a
//! whole window passed with no other task polled, the task waits for the
//! next unpark and the thread sleeps. While other tasks are runnable the
//! yielder waits behind them; it runs only at tokio's periodic driver
//! check, and after [`BUSY_POLLS`] such runs in a row it waits for the next
//! unpark, so a busy scheduler pays nothing for it.
//!
//! While idle it also gives way to any other thread runnable on its core
//! (`sched_yield`), so a third thread does not wait out the window.
//!
//! The cost: up to one window of CPU after each burst of work (an idle
//! node woken 100 times a second spins at most 5 ms a second at the
//! default window). The window's own polls (a clock read each) count as
//! busy in the runtime's busy time, a few percent of the window.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

thread_local! {
    /// Polls of the pool's tasks on this thread (the busy-wait task's own
    /// excluded).
    pub(super) static WORK: Cell<u64> = const { Cell::new(0) };
}

/// A task on a pool: counts each of its polls in [`WORK`].
pub(super) struct Counted<F>(pub F);

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        WORK.with(|w| w.set(w.get().wrapping_add(1)));
        // SAFETY: the inner future is structurally pinned: `Counted` never
        // moves it out and has no Drop.
        unsafe { self.map_unchecked_mut(|c| &mut c.0) }.poll(cx)
    }
}

/// Polls in a row that found other tasks polled since the last: the
/// scheduler is busy (the yielder only runs at tokio's periodic driver
/// check, every 61 polls), so it stops until the next unpark.
const BUSY_POLLS: u32 = 4;

/// The busy-wait task of one scheduler: after each `wake` (the unpark
/// hook), it yields until `window` passed with no other task polled.
pub(super) async fn busy_wait(wake: Arc<Notify>, window: Duration) {
    loop {
        wake.notified().await;
        let mut seen = WORK.with(Cell::get);
        let mut last = Instant::now();
        let mut busy = 0;
        loop {
            tokio::task::yield_now().await;
            let (work, now) = (WORK.with(Cell::get), Instant::now());
            if work != seen {
                (seen, last) = (work, now);
                busy += 1;
                if busy == BUSY_POLLS {
                    break;
                }
            } else if now - last >= window {
                break;
            } else {
                busy = 0;
                // Idle: give this core to any other thread that wants it
                // (on two cores a third thread would otherwise wait out
                // the window).
                std::thread::yield_now();
            }
        }
    }
}
