//! The supervisor process: its state, its loop, and how it starts, stops
//! and restarts children (the semantics are in the parent module's docs).

#[allow(clippy::wildcard_imports)] // the parent's types and imports
use super::*;
use crate::Observed;

struct Child {
    spec: ChildSpec,
    pid: Option<Pid>,
    restarts: u32,
}

/// The supervisor process's state.
struct State {
    ctx: Ctx<SupervisorMsg>,
    strategy: Strategy,
    intensity: u32,
    period: Duration,
    children: Vec<Child>,
    restart_times: VecDeque<Instant>,
    /// Events received while waiting for a particular child's exit.
    stash: VecDeque<Event<SupervisorMsg>>,
    /// Stopped children that did not exit within their kill wait.
    unresponsive: Vec<Pid>,
    /// The process the supervisor was started linked to: its exit, for any
    /// reason, shuts the supervisor down (as OTP).
    parent: Option<Pid>,
}

/// Tells the starter how the start went (and the children's pids).
type Ready = oneshot::Sender<Result<Vec<Pid>, SupervisorError>>;

pub(super) async fn run(ctx: Ctx<SupervisorMsg>, spec: SupervisorSpec, parent: Option<Pid>, ready: Ready) -> ExitReason {
    let children = spec.children.into_iter().map(|spec| Child { spec, pid: None, restarts: 0 }).collect();
    let mut st = State {
        ctx,
        strategy: spec.strategy,
        intensity: spec.intensity,
        period: spec.period,
        children,
        restart_times: VecDeque::new(),
        stash: VecDeque::new(),
        unresponsive: Vec::new(),
        parent,
    };
    if let Err(e) = st.start_range(0) {
        st.stop_range(0).await;
        let reason = ExitReason::error(&e);
        let _ = ready.send(Err(e));
        return reason;
    }
    let _ = ready.send(Ok(st.children.iter().filter_map(|c| c.pid).collect()));
    loop {
        let event = match st.stash.pop_front() {
            Some(e) => e,
            None => st.ctx.recv_event().await,
        };
        if let Some(reason) = st.handle(event).await {
            return reason;
        }
    }
}

impl State {
    fn index_of_pid(&self, pid: Pid) -> Option<usize> {
        self.children.iter().position(|c| c.pid == Some(pid))
    }

    fn index_of_id(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    fn start_child(&mut self, i: usize) -> Result<Pid, SupervisorError> {
        let child = &mut self.children[i];
        let opts = SpawnOpts {
            mailbox: child.spec.mailbox.clone(),
            trap_exit: child.spec.trap_exit,
            link: Some(self.ctx.pid()),
            restarts: child.restarts,
            ..SpawnOpts::default()
        };
        let pid = (child.spec.start)(self.ctx.node(), opts)
            .map_err(|reason| SupervisorError::StartFailed { id: child.spec.id.clone(), reason })?;
        child.pid = Some(pid);
        Ok(pid)
    }

    /// Starts children `from..` that are not running, in order.
    fn start_range(&mut self, from: usize) -> Result<(), SupervisorError> {
        for i in from..self.children.len() {
            if self.children[i].pid.is_none() {
                self.start_child(i)?;
            }
        }
        Ok(())
    }

    /// Stops children `from..` in reverse order.
    async fn stop_range(&mut self, from: usize) {
        for i in (from..self.children.len()).rev() {
            self.stop_child(i).await;
        }
    }

    async fn stop_child(&mut self, i: usize) {
        let Some(pid) = self.children[i].pid.take() else { return };
        // Watch with a monitor instead of the link: its Down ends the wait,
        // and an Exit the child sent before the unlink is discarded here or
        // in `await_exit` (a dying process signals links before monitors).
        self.ctx.monitor(pid);
        self.ctx.unlink(pid);
        self.stash.retain(|e| !matches!(e, Event::Exit { from, .. } if *from == pid));
        let stopped = match self.children[i].spec.shutdown {
            Shutdown::BrutalKill => {
                self.ctx.exit(pid, ExitReason::Kill);
                self.await_exit(pid, Some(KILL_WAIT_MAX)).await
            }
            Shutdown::Timeout(t) => {
                self.ctx.exit(pid, ExitReason::Shutdown);
                if self.await_exit(pid, Some(t)).await {
                    true
                } else {
                    self.ctx.exit(pid, ExitReason::Kill);
                    self.await_exit(pid, Some(KILL_WAIT_MAX)).await
                }
            }
            Shutdown::Infinity => {
                self.ctx.exit(pid, ExitReason::Shutdown);
                self.await_exit(pid, None).await
            }
        };
        if !stopped {
            // It never reached an await point; remember it so its late Exit
            // is not taken for a stranger's.
            self.unresponsive.push(pid);
        }
    }

    /// Waits for `pid`'s down message, stashing other events. False on timeout.
    async fn await_exit(&mut self, pid: Pid, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let event = match deadline {
                Some(d) => match self.ctx.recv_event_timeout(d.saturating_duration_since(Instant::now())).await {
                    Some(e) => e,
                    None => return false,
                },
                None => self.ctx.recv_event().await,
            };
            match event {
                Event::Down { pid: p, .. } if p == pid => return true,
                Event::Exit { from, .. } if from == pid => {}
                other => self.stash.push_back(other),
            }
        }
    }

    /// Handles one event; `Some(reason)` when the supervisor must exit.
    async fn handle(&mut self, event: Event<SupervisorMsg>) -> Option<ExitReason> {
        match event {
            Event::Message(msg) => {
                self.handle_request(msg).await;
                None
            }
            Event::Exit { from, reason } => match self.index_of_pid(from) {
                Some(i) => self.child_exited(i, reason).await,
                None if self.parent == Some(from) => {
                    self.stop_range(0).await;
                    Some(reason)
                }
                None if reason == ExitReason::Normal => None,
                None if self.unresponsive.contains(&from) => None,
                None => {
                    self.stop_range(0).await;
                    Some(reason)
                }
            },
            // Late Downs of children whose stop timed out.
            Event::Down { pid, .. } => {
                self.unresponsive.retain(|p| *p != pid);
                None
            }
        }
    }

    async fn child_exited(&mut self, i: usize, reason: ExitReason) -> Option<ExitReason> {
        self.children[i].pid = None;
        let restart = match self.children[i].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_clean(),
            Restart::Temporary => false,
        };
        if self.children[i].spec.restart == Restart::Temporary {
            self.children.remove(i);
            return None;
        }
        if !restart {
            return None;
        }
        let from = match self.strategy {
            Strategy::OneForOne => i,
            Strategy::OneForAll => 0,
            Strategy::RestForOne => i,
        };
        self.stop_range_except(from, i).await;
        self.restart_range(from, &reason).await
    }

    /// Stops the siblings a restart takes down (reverse order). Temporary
    /// ones are forgotten, as OTP does: they are never restarted.
    async fn stop_range_except(&mut self, from: usize, failed: usize) {
        if self.strategy == Strategy::OneForOne {
            return;
        }
        for j in (from..self.children.len()).rev() {
            if j != failed {
                self.stop_child(j).await;
                if self.children[j].spec.restart == Restart::Temporary {
                    // Removing `j` shifts only later indices, which this
                    // reverse loop has already passed.
                    self.children.remove(j);
                }
            }
        }
    }

    /// Restarts children `from..` (each counted toward intensity), giving up
    /// with `RestartIntensity` when the limit is passed.
    async fn restart_range(&mut self, from: usize, reason: &ExitReason) -> Option<ExitReason> {
        let node = self.ctx.node().clone();
        let counters = &node.shared.counters;
        loop {
            if !self.record_restart() {
                let (intensity, period) = (self.intensity, self.period);
                counters.observed(Observed::IntensityReached { supervisor: self.ctx.pid(), intensity, period });
                self.stop_range(0).await;
                return Some(ExitReason::RestartIntensity);
            }
            let todo: Vec<usize> = (from..self.children.len()).filter(|&j| self.children[j].pid.is_none()).collect();
            let mut failed = false;
            for j in todo {
                if self.strategy == Strategy::OneForOne && j != from {
                    break;
                }
                self.children[j].restarts += 1;
                if self.start_child(j).is_err() {
                    failed = true;
                    break;
                }
                let (child, restarts) = (self.children[j].spec.id.clone(), self.children[j].restarts);
                let supervisor = self.ctx.pid();
                counters.observed(Observed::Restart { supervisor, child, reason: reason.clone(), restarts });
            }
            if !failed {
                return None;
            }
        }
    }

    /// Records a restart now; false if that passes the intensity limit.
    fn record_restart(&mut self) -> bool {
        let now = Instant::now();
        while self.restart_times.front().is_some_and(|t| now.duration_since(*t) > self.period) {
            self.restart_times.pop_front();
        }
        self.restart_times.push_back(now);
        self.restart_times.len() <= self.intensity as usize
    }

    async fn handle_request(&mut self, msg: SupervisorMsg) {
        match msg {
            SupervisorMsg::WhichChildren(reply) => {
                let infos = self
                    .children
                    .iter()
                    .map(|c| ChildInfo { id: c.spec.id.clone(), pid: c.pid, restarts: c.restarts, restart: c.spec.restart })
                    .collect();
                let _ = reply.send(infos);
            }
            SupervisorMsg::ChildPids(reply) => {
                let _ = reply.send(self.children.iter().map(|c| c.pid).collect());
            }
            SupervisorMsg::StartChild(spec, reply) => {
                let result = if self.index_of_id(&spec.id).is_some() {
                    Err(SupervisorError::AlreadyPresent(spec.id))
                } else {
                    self.children.push(Child { spec, pid: None, restarts: 0 });
                    let i = self.children.len() - 1;
                    self.start_child(i).inspect_err(|_| {
                        self.children.pop();
                    })
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let result = match self.index_of_id(&id) {
                    Some(i) => {
                        self.stop_child(i).await;
                        Ok(())
                    }
                    None => Err(SupervisorError::NotFound(id)),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let result = match self.index_of_id(&id) {
                    Some(i) if self.children[i].pid.is_some() => Err(SupervisorError::AlreadyPresent(id)),
                    Some(i) => self.start_child(i),
                    None => Err(SupervisorError::NotFound(id)),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::DeleteChild(id, reply) => {
                let result = match self.index_of_id(&id) {
                    Some(i) if self.children[i].pid.is_some() => Err(SupervisorError::AlreadyPresent(id)),
                    Some(i) => {
                        self.children.remove(i);
                        Ok(())
                    }
                    None => Err(SupervisorError::NotFound(id)),
                };
                let _ = reply.send(result);
            }
        }
    }
}
