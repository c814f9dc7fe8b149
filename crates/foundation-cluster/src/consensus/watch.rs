//! openraft's watch channel (a Raft's metrics), waking its waiters in the
//! order they began to wait.
//!
//! tokio's watch spreads its waiters over eight `Notify`s and picks one per
//! wait from tokio's RNG (`BigNotify` in tokio's `sync/watch.rs`), so two
//! tasks waiting on one Raft's metrics (the observer and a client's
//! `Raft::wait`) wake in an order that replays alike only while tokio's RNG
//! is seeded, which needs `--cfg tokio_unstable`. Here one `Notify` holds
//! every waiter, in order: a simulated run takes the same steps under any
//! build.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openraft::rt::watch::{RecvError, SendError, Watch, WatchReceiver, WatchSender};
use openraft::rt::{OptionalSend, OptionalSync};
use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
use tokio::sync::Notify;

/// The [`Watch`] of [`super::runtime::SeededTokio`].
#[derive(Debug)]
pub struct OrderedWatch;

struct Shared<T> {
    state: RwLock<State<T>>,
    changed: Notify,
    senders: AtomicUsize,
    receivers: AtomicUsize,
}

struct State<T> {
    value: T,
    /// Bumped by every change.
    version: u64,
}

impl<T> Shared<T> {
    fn version(&self) -> u64 {
        self.state.read().version
    }

    fn read(&self) -> MappedRwLockReadGuard<'_, T> {
        RwLockReadGuard::map(self.state.read(), |s| &s.value)
    }
}

/// The sending half; the channel closes when the last one is dropped.
pub struct Sender<T>(Arc<Shared<T>>);

/// A receiving half: it has seen the version it last looked at.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    seen: u64,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::SeqCst);
        Self(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        Self { shared: self.shared.clone(), seen: self.seen }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receivers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Watch for OrderedWatch {
    type Sender<T: OptionalSend + OptionalSync> = Sender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = Receiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = MappedRwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Sender<T>, Receiver<T>) {
        let shared = Arc::new(Shared {
            state: RwLock::new(State { value: init, version: 0 }),
            changed: Notify::new(),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
        });
        (Sender(shared.clone()), Receiver { shared, seen: 0 })
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<OrderedWatch, T> for Sender<T> {
    /// Like tokio's: refused (the value handed back) when no receiver is left.
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.0.receivers.load(Ordering::SeqCst) == 0 {
            return Err(SendError(value));
        }
        self.send_if_modified(|current| {
            *current = value;
            true
        });
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = {
            let mut state = self.0.state.write();
            let modified = modify(&mut state.value);
            if modified {
                state.version += 1;
            }
            modified
        };
        if modified {
            self.0.changed.notify_waiters();
        }
        modified
    }

    fn borrow_watched(&self) -> MappedRwLockReadGuard<'_, T> {
        self.0.read()
    }

    fn subscribe(&self) -> Receiver<T> {
        self.0.receivers.fetch_add(1, Ordering::SeqCst);
        Receiver { shared: self.0.clone(), seen: self.0.version() }
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<OrderedWatch, T> for Receiver<T> {
    /// Returns at once if a version came since this receiver last looked;
    /// otherwise waits for one, or fails once every sender is gone.
    async fn changed(&mut self) -> Result<(), RecvError> {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Registered before the version is read: no change slips between.
            notified.as_mut().enable();
            let version = self.shared.version();
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.shared.senders.load(Ordering::SeqCst) == 0 {
                return Err(RecvError(()));
            }
            notified.await;
        }
    }

    fn borrow_watched(&self) -> MappedRwLockReadGuard<'_, T> {
        self.shared.read()
    }

    fn borrow_and_update(&mut self) -> MappedRwLockReadGuard<'_, T> {
        let state = self.shared.state.read();
        self.seen = state.version;
        RwLockReadGuard::map(state, |s| &s.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    }

    #[test]
    fn changes_are_seen_once_and_the_last_sender_closes_it() {
        block_on(async {
            let (tx, mut rx) = OrderedWatch::channel(1u32);
            assert_eq!(*rx.borrow_watched(), 1);
            tx.send(2).expect("a receiver is there");
            rx.changed().await.expect("a change");
            assert_eq!(*rx.borrow_and_update(), 2);
            assert!(!tx.send_if_modified(|_| false), "unmodified");
            assert!(tx.send_if_modified(|v| {
                *v = 3;
                true
            }));
            let mut late = tx.subscribe();
            rx.changed().await.expect("the change to 3");
            let tx2 = tx.clone();
            drop(tx);
            tx2.send(4).expect("still open");
            late.changed().await.expect("a subscriber sees changes after it subscribed");
            assert_eq!(*late.borrow_watched(), 4);
            drop(tx2);
            rx.changed().await.expect("4 came before the close");
            assert!(rx.changed().await.is_err(), "closed, nothing new");
            drop((rx, late));
        });
        let (tx, rx) = OrderedWatch::channel(0u8);
        drop(rx);
        assert_eq!(tx.send(5), Err(SendError(5)), "no receiver left");
    }

    /// Waiters wake in the order they began to wait, every time.
    #[test]
    fn waiters_wake_in_the_order_they_began_to_wait() {
        let order = block_on(async {
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let (tx, rx) = OrderedWatch::channel(0u32);
                    let woke = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
                    let mut tasks = Vec::new();
                    for i in 0..16 {
                        let (mut rx, woke) = (rx.clone(), woke.clone());
                        tasks.push(tokio::task::spawn_local(async move {
                            rx.changed().await.expect("changed");
                            woke.borrow_mut().push(i);
                        }));
                        tokio::task::yield_now().await;
                    }
                    tx.send(1).expect("sent");
                    for t in tasks {
                        t.await.expect("ran");
                    }
                    woke.borrow().clone()
                })
                .await
        });
        assert_eq!(order, (0..16).collect::<Vec<_>>());
    }
}
