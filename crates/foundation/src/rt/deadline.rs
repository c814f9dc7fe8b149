//! Deadlines shared by many waits: one timer task per node, instead of a
//! tokio timer armed and disarmed for every `Addr::call`.
//!
//! A tokio `Sleep` registers with the timer driver when first polled and
//! deregisters when dropped, about half of a local call's round trip. Here
//! a wait pushes `(deadline, entry)` on the node's heap under a short lock;
//! the entry is the reply's own slot (`reply.rs`), which settles without
//! touching the heap. One task per node sleeps until the earliest
//! deadline, expires the entries due and drops the settled ones.
//!
//! - **Bounded.** Settled entries still in the heap are garbage. Once the
//!   heap holds twice what the last sweep left plus [`GARBAGE_SLACK`], the
//!   next arm sweeps them all out (amortized O(1) per arm), and every entry
//!   leaves by its deadline anyway.
//! - **The timer task** is spawned through the node's [`super::Rt`] on the
//!   first wait, so a simulated host keeps it (and its time is virtual). It
//!   wakes only for the earliest deadline, or when a wait arms one earlier
//!   than it sleeps towards, and it ends when the node's `Rt` is dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Done entries tolerated beyond the live ones before a sweep.
pub const GARBAGE_SLACK: usize = 1024;

/// What waits on a deadline: told when it passes, unless settled first.
pub(crate) trait Expire: Send + Sync {
    /// Answered or abandoned: the heap may drop it unfired.
    fn settled(&self) -> bool;
    /// The deadline passed: wake the waiter.
    fn expire(&self);
}

/// Ordered by deadline, then by arming order (`seq`).
struct Slot {
    at: Instant,
    seq: u64,
    entry: Arc<dyn Expire>,
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Slot {}
impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Slot {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Heap {
    slots: BinaryHeap<Reverse<Slot>>,
    seq: u64,
    /// What the timer task sleeps towards (`None`: it waits for a wake).
    target: Option<Instant>,
    /// Entries the last sweep left.
    swept_len: usize,
}

/// Where "now" comes from for arming: a deadline needs no precision finer
/// than the scheduler's, and the kernel's coarse monotonic clock reads in
/// about 5 ns against 26 for the precise one (measured on the project's
/// machine). Simulated hosts (and paused test time) use tokio's clock.
enum ArmClock {
    Tokio,
    /// tokio's `base` and the coarse clock's reading at the same moment,
    /// and the coarse clock's resolution.
    Coarse {
        base: Instant,
        base_ns: u64,
        resolution: Duration,
    },
}

/// The coarse monotonic clock, in nanoseconds.
fn coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl ArmClock {
    fn new(real: bool) -> Self {
        let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: as in `coarse_ns`.
        let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } == 0;
        if !real || !ok {
            return Self::Tokio;
        }
        let resolution = Duration::new(res.tv_sec as u64, res.tv_nsec as u32);
        Self::Coarse { base: Instant::now(), base_ns: coarse_ns(), resolution }
    }

    /// Now, never earlier than tokio's now: the coarse clock lags the
    /// precise one by less than its resolution, and so did its base
    /// reading, so adding the resolution keeps a deadline from firing
    /// early (it may fire up to two resolutions late: 8 ms at 250 Hz).
    fn now(&self) -> Instant {
        match self {
            Self::Tokio => Instant::now(),
            Self::Coarse { base, base_ns, resolution } => *base + Duration::from_nanos(coarse_ns().saturating_sub(*base_ns)) + *resolution,
        }
    }
}

/// A node's deadlines (see the module docs).
pub(crate) struct Deadlines {
    clock: ArmClock,
    heap: Mutex<Heap>,
    /// Wakes the timer task (an earlier deadline, or the node going away).
    wake: Arc<Notify>,
    /// Whether a timer task is alive.
    running: AtomicBool,
}

/// Held by the timer task: clears `running` however the task ends.
struct Running(Weak<Deadlines>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(d) = self.0.upgrade() {
            d.running.store(false, Ordering::Release);
        }
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl Deadlines {
    /// `real`: the node's clock is the machine's (not simulated), and
    /// deadlines are armed from the coarse clock.
    pub(crate) fn new(real: bool) -> Arc<Deadlines> {
        Arc::new(Deadlines {
            clock: ArmClock::new(real),
            heap: Mutex::default(),
            wake: Arc::new(Notify::new()),
            running: AtomicBool::new(false),
        })
    }

    /// The timer task to spawn, unless one runs: a node used from a
    /// runtime that shut down lost its task with it, and the next wait
    /// starts another.
    pub(crate) fn timer_if_stopped(self: &Arc<Self>) -> Option<impl Future<Output = ()> + Send + 'static> {
        // A load first: every call passes here, and a swap would write the
        // shared line each time.
        if self.running.load(Ordering::Acquire) || self.running.swap(true, Ordering::AcqRel) {
            return None;
        }
        let (deadlines, wake) = (Arc::downgrade(self), self.wake.clone());
        Some(async move {
            let _running = Running(deadlines.clone());
            timer(deadlines, wake).await;
        })
    }

    /// Arms a deadline `after` from now for `entry` (dropped unfired once
    /// it reports itself settled).
    pub(crate) fn arm(self: &Arc<Self>, after: Duration, entry: Arc<dyn Expire>) {
        let at = self.clock.now() + after;
        let earlier = {
            let mut heap = self.heap.lock();
            // Settled entries are garbage until they reach the top; once the
            // heap doubles what the last sweep left (plus the slack), a
            // sweep drops them all: amortized O(1) per arm.
            if heap.slots.len() > 2 * heap.swept_len + GARBAGE_SLACK {
                heap.slots.retain(|Reverse(s)| !s.entry.settled());
                heap.swept_len = heap.slots.len();
            }
            heap.seq += 1;
            let seq = heap.seq;
            heap.slots.push(Reverse(Slot { at, seq, entry }));
            let earlier = heap.target.is_none_or(|t| at < t);
            if earlier {
                heap.target = Some(at);
            }
            earlier
        };
        if earlier {
            self.wake.notify_one();
        }
    }

    /// Fires what is due; returns the next deadline to sleep towards.
    fn fire_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut due = Vec::new();
        let next = {
            let mut heap = self.heap.lock();
            while let Some(Reverse(top)) = heap.slots.peek() {
                if top.entry.settled() {
                    heap.slots.pop();
                } else if top.at <= now {
                    let Some(Reverse(slot)) = heap.slots.pop() else { break };
                    due.push(slot.entry);
                } else {
                    break;
                }
            }
            let next = heap.slots.peek().map(|Reverse(s)| s.at);
            heap.target = next;
            next
        };
        for entry in due {
            entry.expire();
        }
        next
    }
}

async fn timer(deadlines: Weak<Deadlines>, wake: Arc<Notify>) {
    loop {
        let next = match deadlines.upgrade() {
            Some(d) => d.fire_due(),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    biased;
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::Poll;

    use super::*;
    use crate::addr::CallError;
    use crate::reply::{Answer, reply_channel};
    use crate::rt::{Rt, RtConfig};

    const GUARD: Duration = Duration::from_secs(10);

    fn heap_len(rt: &Rt) -> usize {
        rt.inner.deadlines.heap.lock().slots.len()
    }

    fn waiting(rt: &Rt, after: Duration) -> Answer<()> {
        // The reply half is kept alive (leaked into the test's scope by the
        // caller) so the answer can only end by its deadline.
        let (reply, answer) = reply_channel();
        std::mem::forget(reply);
        answer.with_deadline(rt, after)
    }

    #[tokio::test]
    async fn a_deadline_fires_and_an_earlier_one_armed_later_fires_first() {
        let rt = Rt::new(RtConfig::default());
        let late = waiting(&rt, Duration::from_secs(3600));
        let early = waiting(&rt, Duration::from_millis(20));
        let fired = tokio::time::timeout(GUARD, early).await.expect("the earlier deadline woke the timer and fired");
        assert_eq!(fired, Err(CallError::Timeout));
        let mut late = std::pin::pin!(late);
        assert!(poll_once(late.as_mut()).await.is_pending(), "an hour has not passed");
    }

    async fn poll_once<F: Future + Unpin>(mut f: F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await
    }

    #[tokio::test]
    async fn deadlines_answered_in_time_leave_a_bounded_heap() {
        let rt = Rt::new(RtConfig::default());
        for i in 0..20 * GARBAGE_SLACK {
            let (reply, answer) = reply_channel::<usize>();
            let answer = answer.with_deadline(&rt, Duration::from_secs(60));
            reply.send(i).unwrap();
            assert_eq!(answer.await, Ok(i));
        }
        let held: Vec<Answer<()>> = (0..100).map(|_| waiting(&rt, Duration::from_secs(60))).collect();
        let len = heap_len(&rt);
        assert!(len <= 2 * held.len() + 2 * GARBAGE_SLACK + 1, "{len} entries for {} live waits", held.len());
    }

    #[test]
    fn a_node_used_from_a_second_runtime_still_times_out() {
        let rt = Rt::new(RtConfig::default());
        for round in 0..2 {
            // Each runtime is dropped after its round, and the timer task
            // started in the first with it.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async {
                let fired = tokio::time::timeout(GUARD, waiting(&rt, Duration::from_millis(20))).await;
                assert_eq!(fired, Ok(Err(CallError::Timeout)), "round {round}: the deadline fired");
            });
        }
    }
}
