//! A node: one runtime handle that owns a process table, a name registry,
//! process groups and the runtime seam. Nothing in Foundation is a
//! process-wide global, so several nodes can live in one OS process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::exit::MonitorRef;
use crate::mailbox::{ConfigError, MailboxConfig};
use crate::process::{self, AnyProcess, Extra, Process, ProcessInfo, Runner, SignalKind, Watcher};
use crate::rt::{Rt, RtConfig};
use crate::table::Table;
use crate::{Addr, Ctx, ExitReason, IntoExit, Message, NodeId, Pid, SendError};

/// Longest registered name or group name, in bytes.
pub const NAME_BYTES_MAX: usize = 255;

/// How to build a [`Node`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's name (unique in a cluster).
    pub name: String,
    /// Distinguishes restarts of the same name; part of every pid.
    pub creation: u32,
    /// Runtime seam settings (seed, clock, network).
    pub rt: RtConfig,
    /// Mailbox settings of processes spawned without their own.
    pub mailbox: MailboxConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { name: "local".into(), creation: 1, rt: RtConfig::default(), mailbox: MailboxConfig::default() }
    }
}

/// Options for [`Node::spawn_with`].
#[derive(Clone, Debug, Default)]
pub struct SpawnOpts {
    /// Mailbox settings; the node's default when `None`.
    pub mailbox: Option<Arc<MailboxConfig>>,
    /// Start trapping exits (before the body runs, so no signal is missed).
    pub trap_exit: bool,
    /// Link to this process before the body runs (`spawn_link`).
    pub link: Option<Pid>,
    /// Restart count reported in [`ProcessInfo::restarts`].
    pub restarts: u32,
    /// Register this name for the process before its body runs; if the name
    /// is taken the spawn fails and nothing runs.
    pub name: Option<String>,
    /// Join this group before the body runs.
    pub group: Option<String>,
    /// Run on this scheduler of the node's [`SchedulerPool`](crate::rt::SchedulerPool)
    /// instead of next to the spawner. Refused on a node without a pool.
    pub scheduler: Option<usize>,
    /// A hint that works on every node: start this process away from its
    /// spawner, on the pool's next scheduler in turn (round-robin), for
    /// work that should use every core from the start. On a node without
    /// a pool, tokio's runtime places every task itself and the hint
    /// changes nothing. `scheduler` wins when both are set.
    pub spread: bool,
}

/// Why [`Node::spawn_with`] spawned nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The mailbox config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The name or group could not be taken.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// `SpawnOpts::scheduler` names no scheduler of this node.
    #[error("no scheduler {index}: this node has {available} (0 means it runs on the ambient tokio runtime, without a pool)")]
    NoScheduler {
        /// The scheduler asked for.
        index: usize,
        /// Schedulers the node has.
        available: usize,
    },
}

/// Spawns a process's task where `opts` asks: a given scheduler, spread,
/// or next to the spawner.
fn place<T: Future<Output = ()> + Send + 'static>(rt: &crate::rt::Rt, opts: &SpawnOpts, task: T) -> tokio::task::JoinHandle<()> {
    match opts.scheduler {
        // `spawn_with` checked the index; should that ever not hold, the
        // process still runs (next to its spawner) rather than vanish.
        Some(index) => rt.spawn_on(index, task).unwrap_or_else(|task| {
            debug_assert!(false, "scheduler {index} was checked by spawn_with");
            rt.spawn(task)
        }),
        None if opts.spread => rt.spawn_spread(task),
        None => rt.spawn(task),
    }
}

/// Errors of the name registry and process groups.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is taken by a live process.
    #[error("name `{0}` is already registered to {1}")]
    AlreadyRegistered(String, Pid),
    /// The process is not alive.
    #[error("process {0} is not alive")]
    NoProc(Pid),
    /// The name is empty or longer than [`NAME_BYTES_MAX`].
    #[error("invalid name: {0}")]
    InvalidName(String),
}

/// A handle on a node (cheap to clone).
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<NodeShared>,
}

pub(crate) struct NodeShared {
    pub id: NodeId,
    pub name: String,
    pub rt: Rt,
    pub table: Table,
    next_ref: AtomicU64,
    live: AtomicUsize,
    /// Exits by reason, supervisor restarts, observers (`stats.rs`).
    pub counters: crate::stats::Counters,
    all_exited: Notify,
    default_mailbox: Arc<MailboxConfig>,
    registry: Mutex<HashMap<String, Pid>>,
    groups: Mutex<BTreeMap<String, BTreeSet<Pid>>>,
    /// Reaches pids of other nodes (see `dist.rs`).
    pub dist: std::sync::OnceLock<Arc<dyn crate::dist::Distribution>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({} {:?}, {} processes)", self.shared.name, self.shared.id, self.live_processes())
    }
}

fn check_name(name: &str) -> Result<(), RegistryError> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(RegistryError::InvalidName(format!("names are 1..={NAME_BYTES_MAX} bytes, got {}", name.len())));
    }
    Ok(())
}

impl Node {
    /// A node with default settings, named `name`.
    pub fn new(name: &str) -> Self {
        Self::with_config(NodeConfig { name: name.into(), ..NodeConfig::default() }).expect("default config is valid")
    }

    /// A node from a config; the error names the bad field.
    pub fn with_config(config: NodeConfig) -> Result<Self, ConfigError> {
        if config.name.is_empty() || config.name.len() > NAME_BYTES_MAX {
            return Err(ConfigError::new("node.name", format!("must be 1..={NAME_BYTES_MAX} bytes")));
        }
        config.mailbox.validate()?;
        let shared = NodeShared {
            id: NodeId::new(&config.name, config.creation),
            name: config.name,
            rt: Rt::new(config.rt),
            table: Table::new(),
            next_ref: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            counters: crate::stats::Counters::default(),
            all_exited: Notify::new(),
            default_mailbox: Arc::new(config.mailbox),
            registry: Mutex::new(HashMap::new()),
            groups: Mutex::new(BTreeMap::new()),
            dist: std::sync::OnceLock::new(),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The node incarnation's id (part of every pid it makes).
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The runtime seam of this node.
    pub fn rt(&self) -> &Rt {
        &self.shared.rt
    }

    /// The pid the node itself signs exit signals with (local id 0; no process).
    pub fn system_pid(&self) -> Pid {
        Pid::new(self.shared.id, 0)
    }

    /// Spawns a process running `body` with default options.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use foundation::Node;
    /// let node = Node::new("doc");
    /// let echo = node.spawn(|mut ctx: foundation::Ctx<(u32, tokio::sync::oneshot::Sender<u32>)>| async move {
    ///     loop {
    ///         let (n, reply) = ctx.recv().await;
    ///         let _ = reply.send(n + 1);
    ///     }
    /// });
    /// let (tx, rx) = tokio::sync::oneshot::channel();
    /// echo.send((41, tx)).await.unwrap();
    /// assert_eq!(rx.await.unwrap(), 42);
    /// # });
    /// ```
    pub fn spawn<M, F, Fut>(&self, body: F) -> Addr<M>
    where
        M: Message,
        F: FnOnce(Ctx<M>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExit,
    {
        self.spawn_inner(self.shared.default_mailbox.clone(), &SpawnOpts::default(), body).expect("no name or group to take")
    }

    /// Spawns a process with options. Fails, with nothing left running, on an
    /// invalid mailbox config or a name or group that cannot be taken.
    pub fn spawn_with<M, F, Fut>(&self, opts: SpawnOpts, body: F) -> Result<Addr<M>, SpawnError>
    where
        M: Message,
        F: FnOnce(Ctx<M>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExit,
    {
        let mailbox = match &opts.mailbox {
            Some(cfg) => {
                cfg.validate()?;
                cfg.clone()
            }
            None => self.shared.default_mailbox.clone(),
        };
        let available = self.shared.rt.schedulers();
        if let Some(index) = opts.scheduler.filter(|i| *i >= available) {
            return Err(SpawnError::NoScheduler { index, available });
        }
        Ok(self.spawn_inner(mailbox, &opts, body)?)
    }

    fn spawn_inner<M, F, Fut>(&self, mailbox: Arc<MailboxConfig>, opts: &SpawnOpts, body: F) -> Result<Addr<M>, RegistryError>
    where
        M: Message,
        F: FnOnce(Ctx<M>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExit,
    {
        let shared = &self.shared;
        shared.live.fetch_add(1, Ordering::Relaxed);
        let make = |id| Arc::new(Process::<M>::new(self.clone(), Pid::new(shared.id, id), mailbox, opts.trap_exit, opts.restarts));
        let proc = shared.table.insert_with(make);
        // Until the task is spawned, any early return or panic (a name taken,
        // the body's constructor panicking, no runtime) ends the process
        // cleanly: out of the table, counted out, its links told.
        let guard = process::SpawnGuard::new(&proc);
        if let Some(name) = &opts.name {
            self.register(name, proc.pid())?;
        }
        if let Some(group) = &opts.group {
            self.join(group, proc.pid())?;
        }
        let link_failed = opts.link.is_some_and(|other| !shared.link_new(&proc, other));
        let fut = body(Ctx::new(proc.clone()));
        let task = match shared.rt.pool() {
            // On a migrating pool the body is boxed, so the pool can move
            // the process.
            Some(pool) if pool.migrates() => place(&shared.rt, opts, process::Roaming::new(proc.clone(), fut)),
            _ => place(&shared.rt, opts, Runner::new(proc.clone(), fut)),
        };
        guard.disarm();
        process::attach_task(&proc, task);
        if let (true, Some(other)) = (link_failed, opts.link) {
            // As OTP's spawn_link to a dead parent: an exit signal `noproc`.
            proc.exit_signal(other, ExitReason::NoProc, SignalKind::Explicit);
        }
        Ok(Addr::from_process(proc))
    }

    /// What this node has counted: spawns, live processes, exits by the
    /// kind of their reason, supervisor restarts and give-ups.
    pub fn stats(&self) -> crate::NodeStats {
        self.shared.counters.stats(self.shared.table.inserted(), self.live_processes() as u64)
    }

    /// Calls `observer` with every rare framework event of this node (a
    /// supervisor's restart, a supervisor giving up), on the thread that
    /// saw it: it must be quick and must not block.
    pub fn observe(&self, observer: impl Fn(&crate::Observed) + Send + Sync + 'static) {
        self.shared.counters.observe(std::sync::Arc::new(observer));
    }

    /// Number of live processes on this node.
    pub fn live_processes(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    /// Pids of all live processes, sorted.
    pub fn processes(&self) -> Vec<Pid> {
        self.shared.table.pids(self.shared.id)
    }

    /// Whether `pid` is a live process of this node.
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.shared.get(pid).is_some()
    }

    /// A snapshot of a live process; `None` if it is not alive.
    pub fn process_info(&self, pid: Pid) -> Option<ProcessInfo> {
        self.shared.get(pid)?.info()
    }

    /// A typed handle on `pid`, if it is alive and receives `M`.
    pub fn addr<M: Message>(&self, pid: Pid) -> Option<Addr<M>> {
        let proc = self.shared.get(pid)?.into_any().downcast::<Process<M>>().ok()?;
        Some(Addr::from_process(proc))
    }

    /// Sends `msg` to `pid`, waiting for room if its mailbox is full.
    pub async fn send<M: Message>(&self, pid: Pid, msg: M) -> Result<(), SendError<M>> {
        self.resolve(pid, msg)?.send_owned().await
    }

    /// Sends `msg` to `pid` without waiting.
    pub fn try_send<M: Message>(&self, pid: Pid, msg: M) -> Result<(), SendError<M>> {
        let (addr, msg) = self.resolve(pid, msg)?.into_parts();
        addr.try_send(msg)
    }

    fn resolve<M: Message>(&self, pid: Pid, msg: M) -> Result<crate::addr::Pending<M>, SendError<M>> {
        let Some(proc) = self.shared.get(pid) else { return Err(SendError::NoProc(Some(msg))) };
        let expected = proc.message_type();
        match proc.into_any().downcast::<Process<M>>() {
            Ok(p) => Ok(crate::addr::Pending::new(Addr::from_process(p), msg)),
            Err(_) => Err(SendError::WrongType { msg, expected }),
        }
    }

    /// Sends an exit signal to `pid` (`Process.exit/2`); see [`crate::exit`]
    /// for what each reason does. Returns false if `pid` was not alive.
    pub fn exit(&self, pid: Pid, reason: ExitReason) -> bool {
        self.shared.exit_from(self.system_pid(), pid, reason)
    }

    /// A future that resolves with `pid`'s exit reason (`NoProc` if it is
    /// already gone). It watches from the moment of this call.
    pub fn watch(&self, pid: Pid) -> impl Future<Output = ExitReason> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let tx = match self.shared.get(pid) {
            Some(p) => p.add_watcher(self.shared.new_ref(), Watcher::Oneshot(tx)).err(),
            None => Some(Watcher::Oneshot(tx)),
        };
        if let Some(Watcher::Oneshot(tx)) = tx {
            let _ = tx.send(ExitReason::NoProc);
        }
        async move { rx.await.unwrap_or(ExitReason::NoProc) }
    }

    /// Registers `name` for `pid`. The name goes away when the process exits.
    pub fn register(&self, name: &str, pid: Pid) -> Result<(), RegistryError> {
        check_name(name)?;
        let mut reg = self.shared.registry.lock();
        if let Some(owner) = reg.get(name) {
            return Err(RegistryError::AlreadyRegistered(name.into(), *owner));
        }
        let proc = self.shared.get(pid).ok_or(RegistryError::NoProc(pid))?;
        if !proc.note_membership(Some(name), None) {
            return Err(RegistryError::NoProc(pid));
        }
        reg.insert(name.to_owned(), pid);
        Ok(())
    }

    /// Removes a name; returns the pid it named.
    pub fn unregister(&self, name: &str) -> Option<Pid> {
        // The process forgets the name under the registry lock, so a
        // concurrent `register` of the same name cannot be undone by it.
        let mut reg = self.shared.registry.lock();
        let pid = reg.remove(name)?;
        if let Some(p) = self.shared.get(pid) {
            p.forget_membership(Some(name), None);
        }
        Some(pid)
    }

    /// The pid registered as `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.shared.registry.lock().get(name).copied()
    }

    /// A typed handle on the process registered as `name`.
    pub fn lookup<M: Message>(&self, name: &str) -> Option<Addr<M>> {
        self.addr(self.whereis(name)?)
    }

    /// All registered names, sorted.
    pub fn registered(&self) -> Vec<(String, Pid)> {
        let mut all: Vec<_> = self.shared.registry.lock().iter().map(|(n, p)| (n.clone(), *p)).collect();
        all.sort();
        all
    }

    /// Adds `pid` to `group` (idempotent). Members leave when they exit.
    pub fn join(&self, group: &str, pid: Pid) -> Result<(), RegistryError> {
        check_name(group)?;
        let mut groups = self.shared.groups.lock();
        let proc = self.shared.get(pid).ok_or(RegistryError::NoProc(pid))?;
        if !proc.note_membership(None, Some(group)) {
            return Err(RegistryError::NoProc(pid));
        }
        groups.entry(group.to_owned()).or_default().insert(pid);
        Ok(())
    }

    /// Removes `pid` from `group`; returns whether it was a member.
    pub fn leave(&self, group: &str, pid: Pid) -> bool {
        // Under the groups lock, as `unregister` (a racing `join` stays).
        let mut groups = self.shared.groups.lock();
        let removed = NodeShared::leave_group_locked(&mut groups, group, pid);
        if let Some(p) = self.shared.get(pid) {
            p.forget_membership(None, Some(group));
        }
        removed
    }

    /// Members of `group`, sorted.
    pub fn members(&self, group: &str) -> Vec<Pid> {
        self.shared.groups.lock().get(group).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Names of all non-empty groups, sorted.
    pub fn groups(&self) -> Vec<String> {
        self.shared.groups.lock().keys().cloned().collect()
    }

    /// Kills every process and waits (up to `timeout`) until none is left.
    /// Returns the number still alive at the deadline (0 on success).
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        for pid in self.processes() {
            self.exit(pid, ExitReason::Kill);
        }
        let _ = crate::rt::timeout(timeout, self.all_exited()).await;
        self.live_processes()
    }

    /// Resolves when no process is alive on the node.
    pub async fn all_exited(&self) {
        loop {
            let notified = self.shared.all_exited.notified();
            if self.live_processes() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Releases table memory left over from a burst of processes.
    pub fn shrink(&self) {
        self.shared.table.shrink();
    }
}

impl NodeShared {
    pub fn get(&self, pid: Pid) -> Option<Arc<dyn AnyProcess>> {
        if pid.node() != self.id {
            return None;
        }
        self.table.get(pid)
    }

    /// A monitor reference, distinct from other nodes' (their name hash is
    /// in the high half), since a process may be watched from several nodes.
    pub fn new_ref(&self) -> MonitorRef {
        let n = self.next_ref.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
        MonitorRef((u64::from(self.id.name_hash) << 32) | n)
    }

    /// The distribution layer, for a pid of another node.
    pub fn remote(&self, pid: Pid) -> Option<&Arc<dyn crate::dist::Distribution>> {
        if pid.node() == self.id { None } else { self.dist.get() }
    }

    pub fn process_exited(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_exited.notify_waiters();
        }
    }

    /// Links a process that is not running yet to `other`. Our end first:
    /// if `other` exits in between, its signal finds the link and arrives.
    /// Links a process being spawned to `other`, its parent (what
    /// `ProcessInfo::parent` reports), under one lock of the new process.
    fn link_new<M: Message>(&self, proc: &Process<M>, other: Pid) -> bool {
        {
            let mut st = proc.state.lock();
            let extra = st.extra();
            extra.links.insert(other);
            extra.parent = Some(other);
        }
        if self.get(other).is_some_and(|o| o.add_link(proc.pid())) {
            return true;
        }
        proc.remove_link(other);
        if let Some(extra) = proc.state.lock().extra.as_mut() {
            extra.parent = None;
        }
        false
    }

    pub fn exit_from(&self, from: Pid, to: Pid, reason: ExitReason) -> bool {
        if let Some(d) = self.remote(to) {
            d.exit_signal(from, to, reason, false);
            return true;
        }
        match self.get(to) {
            Some(p) => {
                p.exit_signal(from, reason, SignalKind::Explicit);
                true
            }
            None => false,
        }
    }

    fn leave_group(&self, group: &str, pid: Pid) -> bool {
        Self::leave_group_locked(&mut self.groups.lock(), group, pid)
    }

    fn leave_group_locked(groups: &mut BTreeMap<String, BTreeSet<Pid>>, group: &str, pid: Pid) -> bool {
        let Some(members) = groups.get_mut(group) else { return false };
        let removed = members.remove(&pid);
        if members.is_empty() {
            groups.remove(group);
        }
        removed
    }

    /// Undoes everything other parts of the node hold about an exited process
    /// and delivers its exit to links and monitors.
    pub fn release_relations(&self, pid: Pid, extra: Extra, reason: &ExitReason) {
        if !extra.names.is_empty() {
            let mut reg = self.registry.lock();
            for name in &extra.names {
                if reg.get(name) == Some(&pid) {
                    reg.remove(name);
                }
            }
        }
        for group in &extra.groups {
            self.leave_group(group, pid);
        }
        for (mref, target) in extra.monitors {
            if let Some(d) = self.remote(target) {
                d.demonitor(pid, target, mref);
            } else if let Some(t) = self.get(target) {
                t.remove_watcher(mref);
            }
        }
        for other in extra.links {
            if let Some(d) = self.remote(other) {
                d.exit_signal(pid, other, reason.clone(), true);
            } else if let Some(o) = self.get(other) {
                // Takes down the other end of the link as it delivers.
                o.exit_signal(pid, reason.clone(), SignalKind::Link);
            }
        }
        for (mref, watcher) in extra.watchers {
            match watcher {
                Watcher::Process(w) => {
                    if let Some(d) = self.remote(w) {
                        d.down(w, mref, pid, reason.clone());
                    } else if let Some(w) = self.get(w) {
                        w.down(mref, pid, reason.clone());
                    }
                }
                Watcher::Oneshot(tx) => {
                    let _ = tx.send(reason.clone());
                }
            }
        }
    }
}
