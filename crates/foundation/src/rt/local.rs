//! Spawning on the current `LocalSet`, where a simulator runs each host,
//! and catching the panics of the tasks spawned there.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::JoinHandle;

thread_local! {
    /// Whether [`super::spawn`] puts tasks on the current `LocalSet` (see
    /// [`spawn_locally`]).
    static SPAWN_LOCALLY: Cell<bool> = const { Cell::new(false) };
    /// The first panic of a task spawned locally, until taken.
    static PANICKED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// While the guard lives, [`spawn`](super::spawn) on this thread puts every
/// task on the current `LocalSet` with `spawn_local`. A simulator that runs
/// each host on a `LocalSet` of its own (turmoil does) holds one for the run.
///
/// Why: a runtime keeps its spawned tasks in lists sharded by task id, and
/// task ids come from one process-wide counter, so the order in which a
/// crashed host's tasks are dropped (and its sockets send their FIN and RST
/// segments, each drawing from the simulator's RNG) would depend on how
/// many tasks the process spawned before. A `LocalSet` keeps its tasks in
/// spawn order: a seed's run is then the same run twice in one process, or
/// beside other tests.
///
/// A task spawned so that panics is recorded for [`take_task_panic`] (its
/// `JoinHandle` still gets the panic), so a simulator can fail the run
/// rather than go on with a host that lost, say, its Raft core. tokio can
/// do this itself (`unhandled_panic`) only under `--cfg tokio_unstable`.
#[must_use = "spawning is local only while the guard lives"]
pub fn spawn_locally() -> SpawnLocally {
    PANICKED.with(|p| p.borrow_mut().take());
    SpawnLocally { before: SPAWN_LOCALLY.with(|s| s.replace(true)) }
}

/// The guard of [`spawn_locally`]; dropping it restores what `spawn` did
/// before on this thread.
#[derive(Debug)]
#[must_use = "spawning is local only while the guard is held"]
pub struct SpawnLocally {
    before: bool,
}

impl Drop for SpawnLocally {
    fn drop(&mut self) {
        SPAWN_LOCALLY.with(|s| s.set(self.before));
    }
}

/// The message of the first panic of a task spawned on this thread under
/// [`spawn_locally`] since the last call (or since the guard was made).
pub fn take_task_panic() -> Option<String> {
    PANICKED.with(|p| p.borrow_mut().take())
}

pub(super) fn spawning_locally() -> bool {
    SPAWN_LOCALLY.with(Cell::get)
}

pub(super) fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    tokio::task::spawn_local(Watched(Box::pin(fut)))
}

/// A locally spawned task: a panic out of its poll is recorded, then goes
/// on to tokio as before.
struct Watched<F>(Pin<Box<F>>);

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let task = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| task.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                let message = crate::process::panic_message(payload.as_ref());
                PANICKED.with(|p| {
                    p.borrow_mut().get_or_insert(message);
                });
                resume_unwind(payload)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locally_spawned_task_that_panics_is_recorded_and_its_handle_sees_it() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        let _guard = spawn_locally();
        assert_eq!(take_task_panic(), None);
        let (first, second) = local.block_on(&rt, async {
            let first = crate::rt::spawn(async { panic!("the raft core lost its log") }).await;
            let second = crate::rt::spawn(async { panic!("{}", String::from("a later one")) }).await;
            (first, second)
        });
        assert!(first.expect_err("panicked").is_panic());
        assert!(second.expect_err("panicked").is_panic());
        assert_eq!(take_task_panic().as_deref(), Some("the raft core lost its log"), "the first is kept");
        assert_eq!(take_task_panic(), None, "taken");
        let fine = local.block_on(&rt, async { crate::rt::spawn(async { 7 }).await });
        assert_eq!(fine.expect("ran"), 7);
        assert_eq!(take_task_panic(), None);
    }
}
