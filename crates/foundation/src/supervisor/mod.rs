//! Supervisors, as OTP's `supervisor`.
//!
//! # Semantics
//!
//! A supervisor is a process that traps exits and is linked to each child.
//!
//! - **Start.** Children start one at a time in spec order: each start
//!   function runs, and its process is spawned and linked, before the next
//!   one's. (There is no `init` handshake: the bodies then run concurrently.)
//!   If one fails to start, the ones already started are shut down in reverse order and the
//!   supervisor fails to start with [`SupervisorError::StartFailed`].
//! - **Child exit.** Whether a child is restarted depends on its [`Restart`]:
//!   `Permanent` always, `Transient` unless the reason is `Normal` or
//!   `Shutdown`, `Temporary` never (its spec is removed).
//! - **Strategy.** On a restart, [`Strategy::OneForOne`] restarts the child
//!   alone; [`Strategy::OneForAll`] shuts down all other children (in reverse
//!   start order) and restarts all in order; [`Strategy::RestForOne`] does the
//!   same for the children started after the failed one.
//! - **Intensity.** Each restart is recorded. If more than `intensity`
//!   restarts happen within `period`, the supervisor shuts down all children
//!   and exits with [`ExitReason::RestartIntensity`]. A child that fails to
//!   restart counts as another restart, so a crash loop always ends.
//!   Under one_for_all and rest_for_one, temporary siblings that the restart
//!   stops are forgotten, not restarted.
//! - **Shutdown.** On an exit signal from its parent (the process it was
//!   started linked to), whatever the reason, or on one that is not `Normal`
//!   from any other non-child ([`Supervisor::shutdown`] sends `Shutdown`),
//!   the supervisor shuts down its children in reverse start order and
//!   exits with that reason. Each child
//!   is stopped per its [`Shutdown`]: `BrutalKill` kills at once; `Timeout(t)`
//!   sends `Shutdown`, then kills if the child is still alive after `t`;
//!   `Infinity` sends `Shutdown` and waits (for children that are
//!   supervisors).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::rt::Instant;
use crate::{Addr, CallError, Ctx, Event, ExitReason, IntoExit, MailboxConfig, Message, Node, Pid, Reply, SpawnOpts};

mod state;
use state::run;

/// Wait for a killed child's exit before giving up on it. A kill lands at
/// the child's next await point; a child that never awaits cannot be stopped.
pub const KILL_WAIT_MAX: Duration = Duration::from_secs(5);
/// Timeout of the handle's requests to the supervisor.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Which children restart when one fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the failed child.
    #[default]
    OneForOne,
    /// All children.
    OneForAll,
    /// The failed child and those started after it.
    RestForOne,
}

/// When a child is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always.
    #[default]
    Permanent,
    /// Only after an abnormal exit (not `Normal` or `Shutdown`).
    Transient,
    /// Never; the child is forgotten when it exits.
    Temporary,
}

/// How a child is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once.
    BrutalKill,
    /// Sent `Shutdown`; killed if still alive after this long.
    Timeout(Duration),
    /// Sent `Shutdown`; waited for as long as it takes.
    Infinity,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::Timeout(Duration::from_secs(5))
    }
}

/// Supervisor errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// A child's start function failed.
    #[error("child `{id}` failed to start: {reason}")]
    StartFailed {
        /// The child id.
        id: String,
        /// Why.
        reason: String,
    },
    /// No child with this id.
    #[error("no child `{0}`")]
    NotFound(String),
    /// A child with this id exists already.
    #[error("a child `{0}` exists already")]
    AlreadyPresent(String),
    /// The spec is invalid.
    #[error("invalid supervisor spec: {0}")]
    InvalidSpec(String),
    /// The supervisor did not answer.
    #[error("supervisor unreachable: {0}")]
    Unreachable(#[from] CallError),
}

/// Starts one child: given the node and the options the supervisor needs
/// honoured (link to it, restart count), spawns and returns the pid.
pub type StartFn = Arc<dyn Fn(&Node, SpawnOpts) -> Result<Pid, String> + Send + Sync>;

/// A [`StartFn`] that spawns `body` in a fresh process at each call.
pub fn start_fn<M, F, Fut>(body: F) -> StartFn
where
    M: Message,
    F: Fn(Ctx<M>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoExit,
{
    Arc::new(move |node: &Node, opts: SpawnOpts| node.spawn_with(opts, &body).map(|a| a.pid()).map_err(|e| e.to_string()))
}

/// A child: id, how to start it, when to restart it, how to stop it.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among the supervisor's children.
    pub id: String,
    /// The start function.
    pub start: StartFn,
    /// Restart type.
    pub restart: Restart,
    /// Shutdown method.
    pub shutdown: Shutdown,
    /// Mailbox of the child (the node's default when `None`).
    pub mailbox: Option<Arc<MailboxConfig>>,
    /// Start the child trapping exits, so it sees the supervisor's
    /// `Shutdown` as a message however early it comes.
    pub trap_exit: bool,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec").field("id", &self.id).field("restart", &self.restart).field("shutdown", &self.shutdown).finish()
    }
}

impl ChildSpec {
    /// A child that runs `body` in a fresh process at each (re)start.
    pub fn new<M, F, Fut>(id: impl Into<String>, body: F) -> Self
    where
        M: Message,
        F: Fn(Ctx<M>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExit,
    {
        Self::from_start(id, start_fn(body))
    }

    /// A child started by a custom function (e.g. a nested supervisor).
    pub fn from_start(id: impl Into<String>, start: StartFn) -> Self {
        Self { id: id.into(), start, restart: Restart::Permanent, shutdown: Shutdown::default(), mailbox: None, trap_exit: false }
    }

    /// With this restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// With this shutdown method.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Starting with trap-exit on (see [`ChildSpec::trap_exit`]).
    pub fn trapping_exits(mut self) -> Self {
        self.trap_exit = true;
        self
    }

    /// With this mailbox.
    pub fn mailbox(mut self, mailbox: Arc<MailboxConfig>) -> Self {
        self.mailbox = Some(mailbox);
        self
    }
}

/// A supervisor's configuration.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    /// Restart strategy.
    pub strategy: Strategy,
    /// More than this many restarts within `period` makes the supervisor give up.
    pub intensity: u32,
    /// The window of the intensity limit.
    pub period: Duration,
    /// Children, in start order.
    pub children: Vec<ChildSpec>,
}

impl Default for SupervisorSpec {
    fn default() -> Self {
        // OTP's defaults: 1 restart in 5 seconds.
        Self { strategy: Strategy::OneForOne, intensity: 1, period: Duration::from_secs(5), children: Vec::new() }
    }
}

/// A child as [`Supervisor::which_children`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child id.
    pub id: String,
    /// Its current pid, `None` while not running.
    pub pid: Option<Pid>,
    /// How many times it was restarted.
    pub restarts: u32,
    /// Its restart type.
    pub restart: Restart,
}

/// Requests a supervisor handles.
pub enum SupervisorMsg {
    /// List children in start order.
    WhichChildren(Reply<Vec<ChildInfo>>),
    /// Current pids of the children in start order (no ids: cheaper).
    ChildPids(Reply<Vec<Option<Pid>>>),
    /// Add and start a child (appended to the start order).
    StartChild(ChildSpec, Reply<Result<Pid, SupervisorError>>),
    /// Stop a child; its spec stays (restart it with `RestartChild`).
    TerminateChild(String, Reply<Result<(), SupervisorError>>),
    /// Start a stopped child again.
    RestartChild(String, Reply<Result<Pid, SupervisorError>>),
    /// Forget a stopped child's spec.
    DeleteChild(String, Reply<Result<(), SupervisorError>>),
}

impl Message for SupervisorMsg {}

/// A handle on a running supervisor.
#[derive(Clone, Debug)]
pub struct Supervisor {
    addr: Addr<SupervisorMsg>,
    node: Node,
}

impl Supervisor {
    /// Starts a top-level (unlinked) supervisor and its children.
    pub async fn start(node: &Node, spec: SupervisorSpec) -> Result<Self, SupervisorError> {
        Self::start_with(node, spec, SpawnOpts::default()).await
    }

    /// Starts a supervisor with spawn options (e.g. linked to a parent).
    pub async fn start_with(node: &Node, spec: SupervisorSpec, opts: SpawnOpts) -> Result<Self, SupervisorError> {
        Self::start_reporting(node, spec, opts).await.map(|(sup, _)| sup)
    }

    /// Starts a supervisor; also returns its children's pids as started, in
    /// start order (saving a `child_pids` round trip).
    pub async fn start_reporting(node: &Node, spec: SupervisorSpec, mut opts: SpawnOpts) -> Result<(Self, Vec<Pid>), SupervisorError> {
        validate(&spec)?;
        let (ready_tx, ready_rx) = oneshot::channel();
        opts.trap_exit = true;
        let parent = opts.link;
        let addr =
            node.spawn_with(opts, move |ctx| run(ctx, spec, parent, ready_tx)).map_err(|e| SupervisorError::InvalidSpec(e.to_string()))?;
        match ready_rx.await {
            Ok(Ok(pids)) => Ok((Self { addr, node: node.clone() }, pids)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SupervisorError::Unreachable(CallError::NoReply)),
        }
    }

    /// A [`StartFn`] that starts a supervisor as a child of another. Start
    /// functions cannot wait, so a nested supervisor whose own children fail
    /// to start shows as a child that exits (with the start error) right
    /// after it started, not as a start error of the parent.
    pub fn child_start(spec: SupervisorSpec) -> StartFn {
        Arc::new(move |node: &Node, mut opts: SpawnOpts| {
            validate(&spec).map_err(|e| e.to_string())?;
            let spec = spec.clone();
            opts.trap_exit = true;
            let (ready_tx, _ready_rx) = oneshot::channel();
            let parent = opts.link;
            node.spawn_with(opts, move |ctx| run(ctx, spec, parent, ready_tx)).map(|a| a.pid()).map_err(|e| e.to_string())
        })
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> Pid {
        self.addr.pid()
    }

    /// Children in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        Ok(self.addr.call(SupervisorMsg::WhichChildren, CALL_TIMEOUT).await?)
    }

    /// Current pids of the children in start order (`None` while not running).
    pub async fn child_pids(&self) -> Result<Vec<Option<Pid>>, SupervisorError> {
        Ok(self.addr.call(SupervisorMsg::ChildPids, CALL_TIMEOUT).await?)
    }

    /// Adds and starts a child.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<Pid, SupervisorError> {
        self.addr.call(|r| SupervisorMsg::StartChild(spec, r), CALL_TIMEOUT).await?
    }

    /// Stops a child (its spec stays).
    pub async fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        self.addr.call(|r| SupervisorMsg::TerminateChild(id.into(), r), CALL_TIMEOUT).await?
    }

    /// Starts a stopped child again.
    pub async fn restart_child(&self, id: &str) -> Result<Pid, SupervisorError> {
        self.addr.call(|r| SupervisorMsg::RestartChild(id.into(), r), CALL_TIMEOUT).await?
    }

    /// Forgets a stopped child.
    pub async fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        self.addr.call(|r| SupervisorMsg::DeleteChild(id.into(), r), CALL_TIMEOUT).await?
    }

    /// Shuts the supervisor down (children in reverse order) and waits for it
    /// to exit; returns its exit reason.
    pub async fn shutdown(&self) -> ExitReason {
        let exited = self.node.watch(self.pid());
        self.node.exit(self.pid(), ExitReason::Shutdown);
        exited.await
    }
}

fn validate(spec: &SupervisorSpec) -> Result<(), SupervisorError> {
    if spec.period.is_zero() {
        return Err(SupervisorError::InvalidSpec("period must be above zero".into()));
    }
    let mut ids = std::collections::HashSet::with_capacity(spec.children.len());
    match spec.children.iter().find(|c| !ids.insert(c.id.as_str())) {
        Some(dup) => Err(SupervisorError::AlreadyPresent(dup.id.clone())),
        None => Ok(()),
    }
}
