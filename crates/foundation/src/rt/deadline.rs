//! Deadlines shared by many waits: one timer task per node, instead of a
//! tokio timer armed and disarmed for every `Addr::call`.
//!
//! A tokio `Sleep` registers with the timer driver when first polled and
//! deregisters when dropped, about half of a local call's round trip. Here
//! a wait pushes `(deadline, entry)` on the node's heap under a short lock
//! and, if answered first, only marks its entry done (no lock). One task
//! per node sleeps until the earliest deadline, fires the entries due and
//! drops the done ones.
//!
//! - **Bounded.** Done entries still in the heap are garbage; when they
//!   outnumber the live ones by [`GARBAGE_SLACK`], the next arm removes
//!   them all. The heap holds at most twice the waits in progress, plus the
//!   slack.
//! - **The timer task** is spawned through the node's [`super::Rt`] on the
//!   first wait, so a simulated host keeps it (and its time is virtual). It
//!   wakes only for the earliest deadline, or when a wait arms one earlier
//!   than it sleeps towards, and it ends when the node's `Rt` is dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Done entries tolerated beyond the live ones before a sweep.
pub const GARBAGE_SLACK: usize = 1024;

/// One wait's side.
struct Entry {
    fired: AtomicBool,
    done: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// Ordered by deadline, then by arming order (`seq`).
struct Slot {
    at: Instant,
    seq: u64,
    entry: Arc<Entry>,
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
}

/// A node's deadlines (see the module docs).
pub(crate) struct Deadlines {
    heap: Mutex<Heap>,
    garbage: AtomicUsize,
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
    pub(crate) fn new() -> Arc<Deadlines> {
        Arc::new(Deadlines {
            heap: Mutex::default(),
            garbage: AtomicUsize::new(0),
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

    /// Arms a deadline `after` from now.
    pub(crate) fn arm(self: &Arc<Self>, after: Duration) -> Armed {
        let at = Instant::now() + after;
        let entry = Arc::new(Entry { fired: AtomicBool::new(false), done: AtomicBool::new(false), waker: Mutex::new(None) });
        let earlier = {
            let mut heap = self.heap.lock();
            // The count is a trigger, not a ledger (a retirement racing a
            // firing may count one that left the heap): a sweep removes
            // every done entry and starts the count again.
            let garbage = self.garbage.load(Ordering::Relaxed);
            if garbage > heap.slots.len().saturating_sub(garbage) + GARBAGE_SLACK {
                heap.slots.retain(|Reverse(s)| !s.entry.done.load(Ordering::Relaxed));
                self.garbage.store(0, Ordering::Relaxed);
            }
            heap.seq += 1;
            let seq = heap.seq;
            heap.slots.push(Reverse(Slot { at, seq, entry: entry.clone() }));
            let earlier = heap.target.is_none_or(|t| at < t);
            if earlier {
                heap.target = Some(at);
            }
            earlier
        };
        if earlier {
            self.wake.notify_one();
        }
        Armed { entry, deadlines: self.clone() }
    }

    /// Fires what is due; returns the next deadline to sleep towards.
    fn fire_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut due = Vec::new();
        let next = {
            let mut heap = self.heap.lock();
            while let Some(Reverse(top)) = heap.slots.peek() {
                if top.entry.done.load(Ordering::Relaxed) {
                    heap.slots.pop();
                    let _ = self.garbage.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |g| g.checked_sub(1));
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
            entry.fired.store(true, Ordering::Release);
            if let Some(w) = entry.waker.lock().take() {
                w.wake();
            }
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
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// An armed deadline; dropping it before it fires retires it.
pub(crate) struct Armed {
    entry: Arc<Entry>,
    deadlines: Arc<Deadlines>,
}

impl Drop for Armed {
    fn drop(&mut self) {
        if !self.entry.fired.load(Ordering::Acquire) {
            self.entry.done.store(true, Ordering::Relaxed);
            self.deadlines.garbage.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Future for Armed {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.entry.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        {
            let mut waker = self.entry.waker.lock();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        // Fired between the check and the registration: seen now.
        if self.entry.fired.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::{Rt, RtConfig};

    const GUARD: Duration = Duration::from_secs(10);

    fn heap_len(rt: &Rt) -> usize {
        rt.inner.deadlines.heap.lock().slots.len()
    }

    #[tokio::test]
    async fn a_deadline_fires_and_an_earlier_one_armed_later_fires_first() {
        let rt = Rt::new(RtConfig::default());
        let late = rt.deadline(Duration::from_secs(3600));
        let early = rt.deadline(Duration::from_millis(20));
        tokio::time::timeout(GUARD, early).await.expect("the earlier deadline woke the timer and fired");
        let mut late = std::pin::pin!(late);
        assert!(futures_poll_once(late.as_mut()).await.is_pending(), "an hour has not passed");
    }

    async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await
    }

    #[tokio::test]
    async fn deadlines_answered_in_time_leave_a_bounded_heap() {
        let rt = Rt::new(RtConfig::default());
        for _ in 0..20 * GARBAGE_SLACK {
            drop(rt.deadline(Duration::from_secs(60)));
        }
        let held: Vec<Armed> = (0..100).map(|_| rt.deadline(Duration::from_secs(60))).collect();
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
                let fired = tokio::time::timeout(GUARD, rt.deadline(Duration::from_millis(20))).await;
                assert!(fired.is_ok(), "round {round}: the deadline fired");
            });
        }
    }
}
