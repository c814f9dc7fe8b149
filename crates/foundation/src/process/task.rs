//! The task a process runs in: its body polled, and its end ([`finish`]).

#[allow(clippy::wildcard_imports)] // the process module's types and imports
use super::*;

/// Ends a process: marks it exited, drops its mailbox, removes it from the
/// node and tells its links and monitors. Runs once, from the process's task.
fn finish<M: Message>(node: &NodeShared, proc: &Process<M>, body_reason: Option<ExitReason>) {
    let (reason, extra, leftovers, waiters, task) = {
        let mut st = proc.state.lock();
        if st.life.exited() {
            return;
        }
        st.life.set_exited();
        // A reason recorded by a killer wins over the body's only if the body
        // did not finish on its own first (then there is no body reason).
        let leftovers = st.queue.close(&proc.config);
        let mut extra = st.extra.take();
        let killed_for = extra.as_mut().and_then(|e| e.kill_reason.take());
        let reason = body_reason.or(killed_for).unwrap_or(ExitReason::Killed);
        let waiters = extra.as_mut().map(|e| std::mem::take(&mut e.send_waiters)).unwrap_or_default();
        (reason, extra, leftovers, waiters, st.task.take())
    };
    drop(task);
    waiters.into_iter().for_each(Waker::wake);
    node.table.remove(proc.pid());
    node.counters.exited(&reason);
    // Counted out before anyone is told, so a watcher that wakes sees it gone.
    node.process_exited();
    if let Some(extra) = extra {
        node.release_relations(proc.pid(), *extra, &reason);
    }
    // Last: a message's `Drop` is user code and may panic; the process is
    // fully gone by now whatever it does.
    drop(leftovers);
}

/// The task future of a process: polls the body, catches its panic, and runs
/// [`finish`] exactly once whichever way the body ends.
///
/// It also keeps the process's current [`Context`](crate::context::Context)
/// (the one its last received message carried) across polls: swapped into
/// the thread's slot while the body runs, and out again after.
pub(crate) struct Runner<M: Message, F> {
    pub(super) proc: Arc<Process<M>>,
    context: Option<crate::context::Context>,
    body: F,
}

impl<M: Message, F> Runner<M, F> {
    pub fn new(proc: Arc<Process<M>>, body: F) -> Self {
        Self { proc, context: None, body }
    }
}

impl<M: Message, F> Future for Runner<M, F>
where
    F: Future,
    F::Output: IntoExit,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `body` is structurally pinned: it is never moved out of the
        // Runner, and Runner's Drop does not touch it. The other fields are
        // not pinned and are only used by reference.
        let this = unsafe { self.get_unchecked_mut() };
        let body = unsafe { Pin::new_unchecked(&mut this.body) };
        // The slot is empty between task polls; a process with a context
        // puts it there for the poll and takes back what the body left.
        let outer = this.context.take().map(|c| crate::context::replace(Some(c)));
        let polled = catch_unwind(AssertUnwindSafe(|| body.poll(cx)));
        // Counted after the poll, when the body has just used the block's
        // line; only this task writes the count: no read-modify-write.
        let polls = &this.proc.progress.polls;
        polls.store(polls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if outer.is_some() || crate::context::is_set() {
            this.context = crate::context::replace(outer.flatten());
        }
        let reason = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(out)) => out.into_exit(),
            Err(payload) => ExitReason::Panic(panic_message(payload.as_ref()).into()),
        };
        this.context = None;
        // (A task is not polled again after `Ready`; if it were, the body's
        // panic would be caught and `finish` would find the process exited.)
        finish(&this.proc.node.shared, &this.proc, Some(reason));
        Poll::Ready(())
    }
}

/// A process's task on a migrating scheduler pool: its [`Runner`] with the
/// body boxed, so that an exporting scheduler can move the process: this
/// task ends (without `finish`) and a new one continues the same `Runner`
/// on the other scheduler (see `rt/sched.rs`).
///
/// It holds the runner alone (24 bytes): the pool is the process's node's,
/// and the move's bookkeeping sits in the process's `Progress`. Without
/// `--cfg tokio_unstable` tokio's smallest task cell holds a future of up to
/// 24 bytes, a size smaller than the next (`process.migrating_idle_bytes`).
pub(crate) struct Roaming<M: Message, F>(Option<Runner<M, Pin<Box<F>>>>);

impl<M: Message, F> Roaming<M, F> {
    pub fn new(proc: Arc<Process<M>>, body: F) -> Self {
        proc.progress.settled.store(crate::rt::sched::SETTLE_POLLS, Ordering::Relaxed);
        Self(Some(Runner::new(proc, Box::pin(body))))
    }

    /// The scheduler this process moved to, until it first runs there (it
    /// counts in that scheduler's backlog until then): taken, and the pool
    /// to tell.
    fn take_arrival(runner: &Runner<M, Pin<Box<F>>>) -> Option<(usize, &Arc<crate::rt::SchedulerPool>)> {
        let progress = &runner.proc.progress;
        let to = progress.arriving.load(Ordering::Relaxed);
        if to == 0 {
            return None;
        }
        progress.arriving.store(0, Ordering::Relaxed);
        Some((usize::from(to) - 1, runner.proc.node.shared.rt.pool()?))
    }
}

impl<M: Message, F> Drop for Roaming<M, F> {
    fn drop(&mut self) {
        // Moved, then killed (or its pool stopped) before it ran there.
        if let Some((to, pool)) = self.0.as_ref().and_then(Self::take_arrival) {
            pool.arrived(to);
        }
    }
}

impl<M: Message, F> Future for Roaming<M, F>
where
    F: Future + Send + 'static,
    F::Output: IntoExit,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Unpin: the body is boxed, everything else is a pointer.
        let this = self.get_mut();
        let (target, settled) = {
            let Some(runner) = this.0.as_ref() else { return Poll::Ready(()) };
            if let Some((to, pool)) = Self::take_arrival(runner) {
                pool.arrived(to);
            }
            let settled = runner.proc.progress.settled.load(Ordering::Relaxed);
            let pool = runner.proc.node.shared.rt.pool();
            (pool.and_then(|pool| pool.export_target(settled >= crate::rt::sched::SETTLE_POLLS)), settled)
        };
        if let Some(to) = target
            && let Some(runner) = this.0.take()
        {
            let proc = runner.proc.clone();
            let pool = proc.node.shared.rt.pool().expect("the pool that named the target");
            // The target is counted in its backlog already: it must be recorded.
            let index = u16::try_from(to + 1).expect("a pool has at most cores × 4 schedulers");
            proc.progress.settled.store(0, Ordering::Relaxed);
            proc.progress.arriving.store(index, Ordering::Relaxed);
            // The pool names only its own schedulers; the new task owns the
            // process's ending from now on (a kill since is applied to it).
            if let Some(task) = pool.spawn_on(to, Roaming(Some(runner))) {
                attach_task(&proc, task);
            }
            return Poll::Ready(());
        }
        let Some(runner) = this.0.as_mut() else { return Poll::Ready(()) };
        // Counted only until it can move again: a settled process's poll
        // writes nothing here.
        if settled < crate::rt::sched::SETTLE_POLLS {
            runner.proc.progress.settled.store(settled + 1, Ordering::Relaxed);
        }
        Pin::new(runner).poll(cx)
    }
}

impl<M: Message, F> Drop for Runner<M, F> {
    fn drop(&mut self) {
        // Aborted (killed) or dropped by a runtime shutting down; after a
        // normal end `finish` has run and this does nothing.
        finish(&self.proc.node.shared, &self.proc, None);
    }
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Ends a process whose spawn did not complete (see `Node::spawn_inner`).
pub(crate) struct SpawnGuard<'a, M: Message> {
    proc: &'a Process<M>,
    armed: bool,
}

impl<'a, M: Message> SpawnGuard<'a, M> {
    pub fn new(proc: &'a Process<M>) -> Self {
        Self { proc, armed: true }
    }

    /// The task is spawned: from now on the `Runner` owns the ending.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl<M: Message> Drop for SpawnGuard<'_, M> {
    fn drop(&mut self) {
        if self.armed {
            finish(&self.proc.node.shared, self.proc, Some(ExitReason::error("spawn failed")));
        }
    }
}

/// Stores the task handle once spawned; aborts at once if a kill came first.
pub(crate) fn attach_task<M>(proc: &Process<M>, task: JoinHandle<()>) {
    let mut st = proc.state.lock();
    if st.life.exited() {
        return;
    }
    if st.extra.as_ref().is_some_and(|e| e.kill_reason.is_some()) {
        task.abort();
    }
    st.task = Some(task);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `--cfg tokio_unstable` tokio's smallest task cell holds a
    /// future of up to 24 bytes: a roaming process takes it.
    #[test]
    fn a_roaming_task_is_its_runner_alone() {
        assert_eq!(std::mem::size_of::<Roaming<u64, std::future::Ready<()>>>(), 24);
    }
}
