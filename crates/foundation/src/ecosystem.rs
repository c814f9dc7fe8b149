//! Ecosystems: a coordinator and N workers under one supervisor (the seed's
//! `Foundation.BEAM.Processes`).
//!
//! # BEAM options and what they mean here
//!
//! | option | meaning in Foundation |
//! |---|---|
//! | `fault_tolerance: SelfHealing` | one_for_one supervision, every child permanent: a killed worker **or coordinator** is restarted, and the new pids show in [`ecosystem_info`] |
//! | `fault_tolerance: None` | children are temporary: a process that dies stays dead and drops out of `total_processes` |
//! | `memory_strategy: IsolatedHeaps` | each process's mailbox has its own byte limit (`mailbox.max_bytes`) |
//! | `memory_strategy: SharedHeap` | all the ecosystem's mailboxes draw on one shared byte budget of `mailbox.max_bytes` (a [`ByteBudget`]); payloads are moved, never copied, either way |
//! | `gc_strategy: Standard` | mailbox buffers keep their high-water size for reuse |
//! | `gc_strategy: FrequentMinor` | a mailbox that drains empty releases its buffers down to [`GC_FREQUENT_SHRINK_TO`] slots |

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::supervisor::{ChildSpec, Restart, Shutdown, StartFn, Strategy, Supervisor, SupervisorError, SupervisorSpec};
use crate::{Addr, ByteBudget, ConfigError, Ctx, IntoExit, MailboxConfig, Message, Node, Pid, SpawnOpts};

/// Most workers one ecosystem may have.
pub const WORKERS_MAX: usize = 1_000_000;
/// Buffer slots a mailbox keeps after draining under `GcStrategy::FrequentMinor`.
pub const GC_FREQUENT_SHRINK_TO: usize = 16;

/// What happens when an ecosystem process dies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FaultTolerance {
    /// Nothing: a dead process stays dead.
    #[default]
    None,
    /// Restart any dead process, coordinator and workers alike.
    SelfHealing,
}

/// The seed's `memory_strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryStrategy {
    /// A byte limit per mailbox.
    IsolatedHeaps,
    /// One byte budget for all the ecosystem's mailboxes.
    SharedHeap,
}

/// The seed's `gc_strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcStrategy {
    /// Keep grown buffers.
    Standard,
    /// Release buffers whenever a mailbox drains.
    FrequentMinor,
}

/// The body of the coordinator or of each worker: a function spawned in a
/// fresh process at each (re)start, receiving `M`.
pub struct ProcessSpec<M: Message> {
    start: StartFn,
    _receives: PhantomData<fn(M)>,
}

impl<M: Message> Clone for ProcessSpec<M> {
    fn clone(&self) -> Self {
        Self { start: self.start.clone(), _receives: PhantomData }
    }
}

impl<M: Message> std::fmt::Debug for ProcessSpec<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessSpec<{}>", std::any::type_name::<M>())
    }
}

impl<M: Message> ProcessSpec<M> {
    /// A process running `body`.
    pub fn new<F, Fut>(body: F) -> Self
    where
        F: Fn(Ctx<M>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExit,
    {
        Self { start: crate::supervisor::start_fn(body), _receives: PhantomData }
    }
}

/// An ecosystem's configuration: a coordinator receiving `C` and workers
/// receiving `W`.
pub struct EcosystemConfig<C: Message, W: Message> {
    /// If set, the coordinator is registered as `{name}.coordinator` and the
    /// workers join the group `{name}.workers`.
    pub name: Option<String>,
    /// The coordinator.
    pub coordinator: ProcessSpec<C>,
    /// The workers' body and how many.
    pub workers: (ProcessSpec<W>, usize),
    /// Restart behaviour.
    pub fault_tolerance: FaultTolerance,
    /// Mailbox of every process.
    pub mailbox: MailboxConfig,
    /// See the module table.
    pub memory_strategy: Option<MemoryStrategy>,
    /// See the module table.
    pub gc_strategy: Option<GcStrategy>,
    /// Under self-healing, more restarts than this within `restart_period`
    /// makes the ecosystem give up (its supervisor exits).
    pub max_restarts: u32,
    /// The window of `max_restarts`.
    pub restart_period: Duration,
    /// How long each process gets to stop on shutdown before it is killed.
    pub shutdown_timeout: Duration,
}

impl<C: Message, W: Message> Clone for EcosystemConfig<C, W> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            coordinator: self.coordinator.clone(),
            workers: self.workers.clone(),
            fault_tolerance: self.fault_tolerance,
            mailbox: self.mailbox.clone(),
            memory_strategy: self.memory_strategy,
            gc_strategy: self.gc_strategy,
            max_restarts: self.max_restarts,
            restart_period: self.restart_period,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

impl<C: Message, W: Message> std::fmt::Debug for EcosystemConfig<C, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcosystemConfig")
            .field("name", &self.name)
            .field("coordinator", &self.coordinator)
            .field("workers", &self.workers)
            .field("fault_tolerance", &self.fault_tolerance)
            .field("mailbox", &self.mailbox)
            .field("memory_strategy", &self.memory_strategy)
            .field("gc_strategy", &self.gc_strategy)
            .field("max_restarts", &self.max_restarts)
            .field("restart_period", &self.restart_period)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl<C: Message, W: Message> EcosystemConfig<C, W> {
    /// A coordinator and `count` workers, everything else default.
    pub fn new(coordinator: ProcessSpec<C>, worker: ProcessSpec<W>, count: usize) -> Self {
        Self {
            name: None,
            coordinator,
            workers: (worker, count),
            fault_tolerance: FaultTolerance::None,
            mailbox: MailboxConfig::default(),
            memory_strategy: None,
            gc_strategy: None,
            max_restarts: 10,
            restart_period: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    /// With self-healing.
    pub fn self_healing(mut self) -> Self {
        self.fault_tolerance = FaultTolerance::SelfHealing;
        self
    }

    /// Checks the config; the error names the bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let count = self.workers.1;
        if count == 0 {
            return Err(ConfigError::new("workers.count", "must be at least 1"));
        }
        if count > WORKERS_MAX {
            return Err(ConfigError::new("workers.count", format!("{count} is over the limit of {WORKERS_MAX}")));
        }
        self.mailbox.validate()?;
        if self.mailbox.shared_budget.is_some() {
            return Err(ConfigError::new(
                "mailbox.shared_budget",
                "set memory_strategy: SharedHeap instead; the ecosystem makes the budget",
            ));
        }
        if self.gc_strategy.is_some() && self.mailbox.shrink_to.is_some() {
            return Err(ConfigError::new("gc_strategy", "conflicts with mailbox.shrink_to; set one of them"));
        }
        if self.restart_period.is_zero() {
            return Err(ConfigError::new("restart_period", "must be above zero"));
        }
        if let Some(name) = &self.name
            && (name.is_empty() || name.len() > crate::NAME_BYTES_MAX - ".coordinator".len())
        {
            return Err(ConfigError::new("name", "must be 1..=243 bytes"));
        }
        Ok(())
    }

    /// The mailbox every process gets, with the memory and GC options applied.
    fn effective_mailbox(&self) -> MailboxConfig {
        let mut mb = self.mailbox.clone();
        if self.memory_strategy == Some(MemoryStrategy::SharedHeap) {
            mb.shared_budget = Some(ByteBudget::new(mb.max_bytes));
        }
        if self.gc_strategy == Some(GcStrategy::FrequentMinor) {
            mb.shrink_to = Some(GC_FREQUENT_SHRINK_TO);
        }
        mb
    }
}

/// Why an ecosystem call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EcosystemError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Its supervisor failed.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// After shutdown, some processes were still alive.
    #[error("{0} ecosystem processes still alive after shutdown")]
    StillAlive(usize),
}

/// A running ecosystem of a coordinator receiving `C` and workers
/// receiving `W`. `coordinator` and `workers` are the pids at spawn;
/// [`ecosystem_info`] has the current ones. The typed handles
/// ([`Ecosystem::coordinator_addr`], [`Ecosystem::worker`],
/// [`Ecosystem::worker_addrs`]) need no type at the call site: the
/// config fixed it.
pub struct Ecosystem<C: Message, W: Message> {
    /// The coordinator as spawned.
    pub coordinator: Pid,
    /// The workers as spawned.
    pub workers: Vec<Pid>,
    /// The supervisor over them.
    pub supervisor: Supervisor,
    node: Node,
    _receive: PhantomData<fn(C, W)>,
}

impl<C: Message, W: Message> Clone for Ecosystem<C, W> {
    fn clone(&self) -> Self {
        Self {
            coordinator: self.coordinator,
            workers: self.workers.clone(),
            supervisor: self.supervisor.clone(),
            node: self.node.clone(),
            _receive: PhantomData,
        }
    }
}

impl<C: Message, W: Message> std::fmt::Debug for Ecosystem<C, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ecosystem")
            .field("coordinator", &self.coordinator)
            .field("workers", &self.workers.len())
            .field("supervisor", &self.supervisor)
            .finish()
    }
}

impl<C: Message, W: Message> Ecosystem<C, W> {
    /// The coordinator as spawned, typed; `None` once it has exited (a
    /// restarted one has a new pid: see [`ecosystem_info`]).
    pub fn coordinator_addr(&self) -> Option<Addr<C>> {
        self.node.addr(self.coordinator)
    }

    /// Worker `i` as spawned, typed; `None` past the end or once it has
    /// exited.
    pub fn worker(&self, i: usize) -> Option<Addr<W>> {
        self.node.addr(*self.workers.get(i)?)
    }

    /// The workers as spawned that are still alive, typed, in worker order.
    pub fn worker_addrs(&self) -> Vec<Addr<W>> {
        self.workers.iter().filter_map(|pid| self.node.addr(*pid)).collect()
    }

    /// The current workers, typed (restarted ones included), in worker
    /// order.
    pub async fn current_workers(&self) -> Result<Vec<Addr<W>>, EcosystemError> {
        let info = ecosystem_info(self).await?;
        Ok(info.workers.iter().filter_map(|pid| self.node.addr(*pid)).collect())
    }
}

/// A snapshot of an ecosystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcosystemInfo {
    /// The current coordinator, if alive.
    pub coordinator: Option<Pid>,
    /// The live workers, in worker order.
    pub workers: Vec<Pid>,
    /// Live processes: coordinator plus workers.
    pub total_processes: usize,
    /// Restarts so far, all processes together.
    pub restarts: u32,
    /// The supervisor's pid.
    pub supervisor: Pid,
}

const COORDINATOR_ID: &str = "coordinator";

fn child<C: Message, W: Message>(id: String, start: StartFn, mailbox: &Arc<MailboxConfig>, config: &EcosystemConfig<C, W>) -> ChildSpec {
    let restart = match config.fault_tolerance {
        FaultTolerance::SelfHealing => Restart::Permanent,
        FaultTolerance::None => Restart::Temporary,
    };
    ChildSpec::from_start(id, start).restart(restart).shutdown(Shutdown::Timeout(config.shutdown_timeout)).mailbox(mailbox.clone())
}

/// Wraps a start function so each new process takes the ecosystem's name
/// or group before its body runs (a spawn whose name is taken runs nothing).
fn with_membership(start: StartFn, name: Option<String>, group: Option<String>) -> StartFn {
    if name.is_none() && group.is_none() {
        return start;
    }
    Arc::new(move |node: &Node, mut opts: SpawnOpts| {
        opts.name.clone_from(&name);
        opts.group.clone_from(&group);
        start(node, opts)
    })
}

/// Validates the config and starts the supervisor, the coordinator and the
/// workers; returns once every process is spawned and can take messages.
pub async fn spawn_ecosystem<C: Message, W: Message>(
    node: &Node,
    config: EcosystemConfig<C, W>,
) -> Result<Ecosystem<C, W>, EcosystemError> {
    config.validate()?;
    let mailbox = Arc::new(config.effective_mailbox());
    let count = config.workers.1;
    let coord_name = config.name.as_ref().map(|n| format!("{n}.coordinator"));
    let group = config.name.as_ref().map(|n| format!("{n}.workers"));
    let mut children = Vec::with_capacity(count + 1);
    let coord_start = with_membership(config.coordinator.start.clone(), coord_name, None);
    children.push(child(COORDINATOR_ID.into(), coord_start, &mailbox, &config));
    let worker_start = with_membership(config.workers.0.start.clone(), None, group);
    children.extend((0..count).map(|i| child(format!("worker-{i}"), worker_start.clone(), &mailbox, &config)));
    let spec = SupervisorSpec { strategy: Strategy::OneForOne, intensity: config.max_restarts, period: config.restart_period, children };
    let (supervisor, pids) = Supervisor::start_reporting(node, spec, SpawnOpts::default()).await?;
    let (coordinator, workers) = pids.split_first().map(|(c, w)| (*c, w.to_vec())).ok_or(EcosystemError::StillAlive(0))?;
    Ok(Ecosystem { coordinator, workers, supervisor, node: node.clone(), _receive: PhantomData })
}

/// The ecosystem as it is now: live processes only.
pub async fn ecosystem_info<C: Message, W: Message>(eco: &Ecosystem<C, W>) -> Result<EcosystemInfo, EcosystemError> {
    let children = eco.supervisor.which_children().await?;
    let alive = |pid: Option<Pid>| pid.filter(|p| eco.node.is_alive(*p));
    let mut coordinator = None;
    let mut workers = Vec::with_capacity(children.len());
    let mut restarts = 0;
    for c in children {
        restarts += c.restarts;
        match (c.id == COORDINATOR_ID, alive(c.pid)) {
            (true, pid) => coordinator = pid,
            (false, Some(pid)) => workers.push(pid),
            (false, None) => {}
        }
    }
    let total_processes = workers.len() + usize::from(coordinator.is_some());
    Ok(EcosystemInfo { coordinator, workers, total_processes, restarts, supervisor: eco.supervisor.pid() })
}

/// Stops every process (workers in reverse order, then the coordinator) and
/// verifies that none is left alive.
pub async fn shutdown_ecosystem<C: Message, W: Message>(eco: &Ecosystem<C, W>) -> Result<(), EcosystemError> {
    let mut pids: Vec<Pid> = match eco.supervisor.which_children().await {
        Ok(children) => children.into_iter().filter_map(|c| c.pid).collect(),
        Err(_) => Vec::new(),
    };
    pids.push(eco.coordinator);
    pids.extend(&eco.workers);
    pids.push(eco.supervisor.pid());
    eco.supervisor.shutdown().await;
    let alive = pids.iter().filter(|p| eco.node.is_alive(**p)).count();
    if alive > 0 {
        return Err(EcosystemError::StillAlive(alive));
    }
    Ok(())
}
