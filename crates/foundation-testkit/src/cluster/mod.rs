//! `TestCluster`: one API over the backends that run a Foundation cluster
//! for a test.
//!
//! | backend | nodes | faults |
//! |---|---|---|
//! | [`Backend::Simulated`] | turmoil hosts, deterministic from the seed, in virtual time | turmoil's partition, hold, crash and bounce, link latency and loss |
//! | [`Backend::InProcess`] | real servers on loopback in this process | a fault layer under each node's network seam (see [`faulty`]) |
//! | [`Backend::Processes`] | `foundation node` OS processes with data directories | SIGKILL, SIGSTOP/SIGCONT; the same fault layer in each process, set through its chaos agent |
//!
//! A test is a body `async fn(TestCluster) -> anyhow::Result<T>` run by
//! [`run`], which picks the backend from the [`ClusterSpec`]. Inside, the
//! test talks to the nodes through [`TestCluster::client`], a mesh member
//! that runs no services (the workload's client), and injects faults with
//! [`TestCluster::apply`] and its shorthands. Every fault is logged with
//! its time ([`TestCluster::faults`]).
//!
//! Node indexes are 0-based; node `i` is named `n{i+1}` and has consensus
//! id `i + 1`.

mod fault;
pub mod faulty;
mod inprocess;
pub mod processes;
mod run;
mod sim;
mod steps;
mod support;

pub(crate) use steps::Steps;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use foundation::rt::net::BoxFuture;
pub use foundation_cluster::consensus::DiskError;
use foundation_cluster::consensus::{CLIENT_LOCAL_STATE, ConsensusError, DiskFaults, State};
use foundation_cluster::frame::FRAME_BYTES_DEFAULT;
use foundation_cluster::mesh::Cluster;
use foundation_cluster::server::Service;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

pub use fault::{Fault, FaultError, FaultRecord};
pub use processes::TlsFiles;
pub(crate) use run::body_within;
pub use run::{MIN_FRAME_LIMIT, Run, RunError, run};
pub use sim::TurmoilNetwork;
pub use support::free_ports;
pub(crate) use support::{connect_all, node_seed, scratch_dir, secret, secret_text, separated_pairs};

/// The environment variable with the cluster size (3 when unset).
pub const SIZE_ENV: &str = "TEST_CLUSTER_SIZE";

/// The cluster size the tests use: `TEST_CLUSTER_SIZE`, or 3.
pub fn cluster_size() -> usize {
    std::env::var(SIZE_ENV).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(3)
}

/// Where the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// turmoil: deterministic from the seed, in virtual time.
    Simulated,
    /// Real nodes on loopback inside this process.
    InProcess,
    /// `foundation node` OS processes on loopback.
    Processes,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Simulated => "sim",
            Self::InProcess => "inprocess",
            Self::Processes => "processes",
        })
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Where the nodes run.
    pub backend: Backend,
    /// How many nodes.
    pub nodes: usize,
    /// The seed: the simulator's, the nodes' RNGs', the workload's and the
    /// chaos monkey's.
    pub seed: u64,
    /// The services every node runs.
    pub services: BTreeSet<Service>,
    /// Simulated backend: the most simulated time a run may take (a run
    /// that goes past it fails).
    pub sim_limit: Duration,
    /// Process backend: the `foundation` binary (see
    /// [`processes::foundation_binary`] for where it is looked for).
    pub binary: Option<std::path::PathBuf>,
    /// The nodes' largest mesh frame (`None`: the mesh default,
    /// [`FRAME_BYTES_DEFAULT`]). Simulated clusters use
    /// [`SIM_FRAME_LIMIT`], so a state past it is cheap to build; the
    /// process backend runs `foundation node`, which has no such option
    /// (setting it there is refused).
    pub frame_limit: Option<usize>,
    /// The most wall-clock time the body may take: past it the run fails
    /// with [`RunError::WallLimit`], naming the step it was stuck in
    /// ([`TestCluster::set_step`]). `None`: no limit.
    pub wall_limit: Option<Duration>,
    /// Each node's storage fault seam, shared with the node (across its
    /// restarts) by the simulated and in-process backends: see
    /// [`ClusterSpec::disk_faults`].
    disk_faults: DiskFaultTable,
    /// Process backend: mutual TLS between the nodes and the test's client
    /// from these PEM files (`foundation node --tls-cert --tls-key
    /// --tls-ca`); `None`: none. The other backends refuse it.
    pub tls: Option<TlsFiles>,
    /// Process backend: every node serves its admin API on a free loopback
    /// port, with the token it keeps in its data directory (see
    /// [`TestCluster::admin`]). The other backends refuse it.
    pub http: bool,
    /// Spans to this OpenTelemetry collector (OTLP/HTTP, see
    /// `foundation_cluster::traces`): from every node (in process: one
    /// exporter they share; processes: each node's `--otlp-endpoint`) and
    /// from the client, whose workload operations each run in a trace of
    /// their own ([`TestCluster::traced`]). The simulated backend refuses
    /// it (its time and network are not the collector's).
    pub otlp_endpoint: Option<String>,
}

/// The nodes' [`DiskFaults`], by node index, made on first use.
#[derive(Clone, Debug, Default)]
struct DiskFaultTable(std::sync::Arc<parking_lot::Mutex<Vec<DiskFaults>>>);

/// Empties a node's data directory (it stays, empty, as a lost disk that
/// was replaced leaves it).
pub(crate) fn wipe_dir(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)
}

/// The frame limit of simulated clusters (1 MiB, far below the mesh's
/// 16 MiB default: the `big_state` nemesis grows the state past it).
pub const SIM_FRAME_LIMIT: usize = 1 << 20;

impl ClusterSpec {
    /// `nodes` nodes running every service.
    pub fn new(backend: Backend, nodes: usize, seed: u64) -> Self {
        Self {
            backend,
            nodes,
            seed,
            services: Service::ALL.into_iter().collect(),
            sim_limit: Duration::from_secs(600),
            binary: None,
            frame_limit: (backend == Backend::Simulated).then_some(SIM_FRAME_LIMIT),
            wall_limit: None,
            disk_faults: DiskFaultTable::default(),
            tls: None,
            http: false,
            otlp_endpoint: None,
        }
    }

    /// Node `i`'s storage faults (the handle its consensus store consults
    /// on every write batch; the same handle across restarts).
    pub fn disk_faults(&self, i: usize) -> DiskFaults {
        let mut table = self.disk_faults.0.lock();
        while table.len() <= i {
            table.push(DiskFaults::new());
        }
        table[i].clone()
    }

    /// The nodes' largest mesh frame.
    pub fn frame_limit(&self) -> usize {
        self.frame_limit.unwrap_or(FRAME_BYTES_DEFAULT)
    }

    /// [`cluster_size`] nodes, simulated.
    pub fn simulated(seed: u64) -> Self {
        Self::new(Backend::Simulated, cluster_size(), seed)
    }

    /// [`cluster_size`] nodes in this process.
    pub fn in_process(seed: u64) -> Self {
        Self::new(Backend::InProcess, cluster_size(), seed)
    }
}

/// What a backend does with a fault (already validated).
pub(crate) trait Control: Send + Sync {
    fn apply<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<(), FaultError>>;
    /// Stops every node (the end of the run).
    fn stop(&self) -> BoxFuture<'_, ()>;
    /// Node `i`'s mesh address, where the backend knows one.
    fn addr(&self, _i: usize) -> Option<String> {
        None
    }
    /// Node `i`'s admin API: its address and its token file.
    fn admin(&self, _i: usize) -> Option<(String, std::path::PathBuf)> {
        None
    }
}

/// A running cluster under test. Cheap to clone.
#[derive(Clone)]
pub struct TestCluster {
    inner: Arc<Shared>,
}

struct Shared {
    spec: ClusterSpec,
    names: Vec<String>,
    client: Cluster,
    control: Box<dyn Control>,
    start: Instant,
    log: Mutex<Vec<FaultRecord>>,
    killed: Mutex<BTreeSet<usize>>,
    paused: Mutex<BTreeSet<usize>>,
    /// Nodes whose clock is skewed (ms).
    skewed: Mutex<BTreeMap<usize, i64>>,
    /// Nodes with a disk error or latency set.
    disk_faulty: Mutex<BTreeSet<usize>>,
    /// Killed nodes whose data was lost or cut while they were down
    /// ([`Fault::WipeDisk`], [`Fault::TruncateLog`]): one that refuses to
    /// restart stays down (an operator would have to replace it).
    lost: Mutex<BTreeSet<usize>>,
    steps: Steps,
    /// Where the run's faults and injections are reported.
    telemetry: foundation_cluster::services::Telemetry,
}

/// A node's name from its index.
pub fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

impl TestCluster {
    pub(crate) fn new(spec: ClusterSpec, client: Cluster, control: Box<dyn Control>, steps: Steps) -> Self {
        let names = (0..spec.nodes).map(node_name).collect();
        Self {
            inner: Arc::new(Shared {
                spec,
                names,
                client,
                control,
                start: Instant::now(),
                log: Mutex::default(),
                killed: Mutex::default(),
                paused: Mutex::default(),
                skewed: Mutex::default(),
                disk_faulty: Mutex::default(),
                lost: Mutex::default(),
                steps,
                telemetry: foundation_cluster::services::Telemetry::new(),
            }),
        }
    }

    /// The run's telemetry: every fault applied (`foundation.chaos.fault`:
    /// measurement `at_us`, metadata `fault`, its kind, `detail`, and
    /// `cut_off`, the names of the nodes it may put out of a leader's
    /// reach, comma-separated, see [`Fault::cut_off`]) and
    /// every nemesis injection (`foundation.chaos.injection`, from
    /// [`crate::chaos::ChaosMonkey`]: `at_us`, `held_us`; `nemesis`,
    /// `detail`, `effective`, and `finding` when its probe found one).
    pub fn telemetry(&self) -> &foundation_cluster::services::Telemetry {
        &self.inner.telemetry
    }

    /// How many nodes.
    pub fn size(&self) -> usize {
        self.inner.names.len()
    }

    /// The nodes' names, by index.
    pub fn names(&self) -> &[String] {
        &self.inner.names
    }

    /// The spec it was started from.
    pub fn spec(&self) -> &ClusterSpec {
        &self.inner.spec
    }

    /// The seed of the run.
    pub fn seed(&self) -> u64 {
        self.inner.spec.seed
    }

    /// The client: a mesh member without services, connected to every node.
    pub fn client(&self) -> &Cluster {
        &self.inner.client
    }

    /// Runs `work` in a new trace when the cluster exports spans
    /// ([`ClusterSpec::otlp_endpoint`]); as it is otherwise.
    pub async fn traced<F: Future>(&self, work: F) -> F::Output {
        if self.inner.client.traces().is_none() {
            return work.await;
        }
        let root = foundation::context::Context::generate(self.inner.client.node().rt());
        foundation::context::with_global_context(root, work).await
    }

    /// Node `i`'s mesh address (process backend; `None` for the others).
    pub fn addr(&self, i: usize) -> Option<String> {
        self.inner.control.addr(i)
    }

    /// Node `i`'s admin API (process backend with [`ClusterSpec::http`]):
    /// its address, and the token file in its data directory (read it with
    /// `AdminToken::from_file`; never print it).
    pub fn admin(&self, i: usize) -> Option<(String, std::path::PathBuf)> {
        self.inner.control.admin(i)
    }

    /// Time since the cluster started (virtual under simulation).
    pub fn elapsed(&self) -> Duration {
        self.inner.start.elapsed()
    }

    /// Every fault applied so far, in order.
    pub fn faults(&self) -> Vec<FaultRecord> {
        self.inner.log.lock().clone()
    }

    /// Nodes killed and not restarted.
    pub fn killed(&self) -> BTreeSet<usize> {
        self.inner.killed.lock().clone()
    }

    /// Nodes paused and not resumed.
    pub fn paused(&self) -> BTreeSet<usize> {
        self.inner.paused.lock().clone()
    }

    /// Nodes whose clock is skewed, with the offset (ms).
    pub fn skewed(&self) -> BTreeMap<usize, i64> {
        self.inner.skewed.lock().clone()
    }

    /// Records what the run is doing in `slot` (e.g. `phase`, `monkey`),
    /// so a wall-clock limit that fires names the step that was stuck.
    pub fn set_step(&self, slot: &'static str, what: impl Into<String>) {
        self.inner.steps.set(slot, what.into(), self.elapsed());
    }

    /// Forgets `slot` (its step is over).
    pub fn clear_step(&self, slot: &'static str) {
        self.inner.steps.clear(slot);
    }

    /// What slot `slot` is doing, and since when (cluster time): e.g. the
    /// nemesis the monkey is injecting (`"monkey"`).
    pub fn step(&self, slot: &'static str) -> Option<(String, Duration)> {
        self.inner.steps.get(slot)
    }

    /// What the run is doing, slot by slot.
    pub fn steps(&self) -> String {
        self.inner.steps.describe()
    }

    /// Applies a fault and logs it.
    pub async fn apply(&self, fault: Fault) -> Result<(), FaultError> {
        let n = self.size();
        if let Some(bad) = fault.nodes().into_iter().find(|i| *i >= n) {
            return Err(FaultError::NoSuchNode(bad, n));
        }
        match &fault {
            Fault::Kill { node } if self.inner.killed.lock().contains(node) => {
                return Err(FaultError::State { node: *node, why: "already killed" });
            }
            Fault::Restart { node } if !self.inner.killed.lock().contains(node) => {
                return Err(FaultError::State { node: *node, why: "not killed" });
            }
            Fault::Pause { node } if self.inner.paused.lock().contains(node) => {
                return Err(FaultError::State { node: *node, why: "already paused" });
            }
            Fault::Resume { node } if !self.inner.paused.lock().contains(node) => {
                return Err(FaultError::State { node: *node, why: "not paused" });
            }
            Fault::SetLink { loss, .. } if !(0.0..=1.0).contains(loss) => return Err(FaultError::BadLoss(*loss)),
            Fault::WipeDisk { node } | Fault::TruncateLog { node, .. } if !self.inner.killed.lock().contains(node) => {
                return Err(FaultError::State { node: *node, why: "running (kill it first: its data changes while it is down)" });
            }
            Fault::DiskError { .. } | Fault::DiskLatency { .. } if self.inner.spec.backend == Backend::Processes => {
                return Err(FaultError::Unsupported {
                    fault: "a disk error or latency",
                    backend: Backend::Processes,
                    why: "the storage fault seam is in the node's process (use the simulated or in-process backend)",
                });
            }
            Fault::Throttle { .. } if self.inner.spec.backend == Backend::Simulated => {
                return Err(FaultError::Unsupported {
                    fault: "a bandwidth cap",
                    backend: Backend::Simulated,
                    why: "turmoil models latency and loss, not bandwidth (use the in-process or processes backend)",
                });
            }
            Fault::ClockSkew { node, .. } if self.inner.killed.lock().contains(node) => {
                return Err(FaultError::State { node: *node, why: "killed (a restart starts with a right clock)" });
            }
            _ => {}
        }
        match &fault {
            Fault::ClockSkew { node, offset_ms } => self.skew_clock(*node, *offset_ms).await?,
            Fault::DiskError { node, error } => self.inner.spec.disk_faults(*node).fail(*error),
            Fault::DiskLatency { node, latency_ms } => {
                self.inner.spec.disk_faults(*node).set_latency(Duration::from_millis(*latency_ms));
            }
            _ => self.inner.control.apply(&fault).await?,
        }
        match &fault {
            Fault::Kill { node } => {
                self.inner.killed.lock().insert(*node);
            }
            Fault::Restart { node } => {
                self.inner.killed.lock().remove(node);
                self.inner.lost.lock().remove(node);
                self.inner.skewed.lock().remove(node);
            }
            Fault::ClockSkew { node, offset_ms: 0 } => {
                self.inner.skewed.lock().remove(node);
            }
            Fault::ClockSkew { node, offset_ms } => {
                self.inner.skewed.lock().insert(*node, *offset_ms);
            }
            Fault::Pause { node } => {
                self.inner.paused.lock().insert(*node);
            }
            Fault::WipeDisk { node } | Fault::TruncateLog { node, .. } => {
                self.inner.lost.lock().insert(*node);
            }
            Fault::DiskError { node, error: Some(_) } => {
                self.inner.disk_faulty.lock().insert(*node);
            }
            Fault::DiskLatency { node, latency_ms } if *latency_ms > 0 => {
                self.inner.disk_faulty.lock().insert(*node);
            }
            Fault::Resume { node } => {
                self.inner.paused.lock().remove(node);
            }
            _ => {}
        }
        let at_us = u64::try_from(self.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::info!(at_us, fault = ?fault, "fault injected");
        let detail = format!("{fault:?}");
        let kind = detail.split([' ', '{']).next().unwrap_or_default().to_owned();
        let cut_off = fault.cut_off(self.size()).iter().map(|i| self.names()[*i].clone()).collect::<Vec<_>>().join(",");
        let meta = BTreeMap::from([("fault".to_owned(), kind), ("detail".to_owned(), detail), ("cut_off".to_owned(), cut_off)]);
        self.inner.telemetry.emit("foundation.chaos.fault", &BTreeMap::from([("at_us".to_owned(), at_us as f64)]), &meta);
        self.inner.log.lock().push(FaultRecord { at_us, fault });
        Ok(())
    }

    /// Cuts the network between `groups` (nodes in none form one more).
    pub async fn partition(&self, groups: &[&[usize]]) -> Result<(), FaultError> {
        self.apply(Fault::Partition { groups: groups.iter().map(|g| g.to_vec()).collect() }).await
    }

    /// Drops traffic from `from` to `to`.
    pub async fn partition_oneway(&self, from: &[usize], to: &[usize]) -> Result<(), FaultError> {
        self.apply(Fault::PartitionOneway { from: from.to_vec(), to: to.to_vec() }).await
    }

    /// Cuts one node off from every other node (the client still reaches it).
    pub async fn isolate(&self, node: usize) -> Result<(), FaultError> {
        self.apply(Fault::Partition { groups: vec![vec![node]] }).await
    }

    /// Repairs the network.
    pub async fn heal(&self) -> Result<(), FaultError> {
        self.apply(Fault::Heal).await
    }

    /// Kills a node.
    pub async fn kill(&self, node: usize) -> Result<(), FaultError> {
        self.apply(Fault::Kill { node }).await
    }

    /// Restarts a killed node.
    pub async fn restart(&self, node: usize) -> Result<(), FaultError> {
        self.apply(Fault::Restart { node }).await
    }

    /// Pauses a node's traffic.
    pub async fn pause(&self, node: usize) -> Result<(), FaultError> {
        self.apply(Fault::Pause { node }).await
    }

    /// Resumes a paused node.
    pub async fn resume(&self, node: usize) -> Result<(), FaultError> {
        self.apply(Fault::Resume { node }).await
    }

    /// Holds the traffic between two nodes.
    pub async fn clog(&self, a: usize, b: usize) -> Result<(), FaultError> {
        self.apply(Fault::Clog { a, b }).await
    }

    /// Releases a clog.
    pub async fn unclog(&self, a: usize, b: usize) -> Result<(), FaultError> {
        self.apply(Fault::Unclog { a, b }).await
    }

    /// Sets a link's latency and loss.
    pub async fn set_link(&self, a: usize, b: usize, latency: Duration, loss: f64) -> Result<(), FaultError> {
        self.apply(Fault::SetLink { a, b, latency_ms: latency.as_millis() as u64, loss }).await
    }

    /// Caps the bandwidth between `a` and `b` ([`Fault::Throttle`]; 0: no cap).
    pub async fn throttle(&self, a: usize, b: usize, bytes_per_sec: u64) -> Result<(), FaultError> {
        self.apply(Fault::Throttle { a, b, bytes_per_sec }).await
    }

    /// Skews a node's clock by `offset_ms` (negative: behind), through its
    /// agent, without logging it (see [`Fault::ClockSkew`]).
    pub async fn skew_clock(&self, node: usize, offset_ms: i64) -> Result<(), FaultError> {
        let name = self.inner.names.get(node).ok_or(FaultError::NoSuchNode(node, self.size()))?;
        self.client()
            .rpc::<i64, i64>(name, crate::agent::CLOCK_RPC, offset_ms, Duration::from_secs(2))
            .await
            .map(drop)
            .map_err(|e| FaultError::Backend(format!("{name}: setting the clock: {e}")))
    }

    /// Heals the network, resumes paused nodes, restarts killed ones and
    /// puts skewed clocks right.
    pub async fn recover(&self) -> Result<(), FaultError> {
        self.heal().await?;
        // Disks first: a node restarted below writes at once.
        let disk_faulty: Vec<usize> = std::mem::take(&mut *self.inner.disk_faulty.lock()).into_iter().collect();
        for node in disk_faulty {
            self.apply(Fault::DiskError { node, error: None }).await?;
            self.apply(Fault::DiskLatency { node, latency_ms: 0 }).await?;
        }
        for node in self.paused() {
            self.resume(node).await?;
        }
        for node in self.killed() {
            match self.restart(node).await {
                Ok(()) => {}
                // Its data was lost and it refuses to start: right, and it
                // stays down.
                Err(e) if self.inner.lost.lock().contains(&node) => {
                    tracing::info!(node, error = %e, "a node that lost its data stays down");
                }
                Err(e) => return Err(e),
            }
        }
        for node in self.skewed().into_keys() {
            self.apply(Fault::ClockSkew { node, offset_ms: 0 }).await?;
        }
        Ok(())
    }

    /// A node's applied index and state as applied there.
    pub async fn local_state(&self, node: usize, timeout: Duration) -> Result<(Option<u64>, State), String> {
        let name = self.inner.names.get(node).ok_or_else(|| format!("no node {node}"))?;
        let answer: Result<(Option<u64>, State), ConsensusError> =
            self.client().rpc(name, CLIENT_LOCAL_STATE, (), timeout).await.map_err(|e| e.to_string())?;
        answer.map_err(|e| e.to_string())
    }

    /// Waits until every node that is not killed has applied the same log
    /// to the same state, and returns the time it took and that state.
    pub async fn converged(&self, timeout: Duration) -> Result<(Duration, State), String> {
        let start = Instant::now();
        let mut last = String::from("no answer yet");
        while start.elapsed() < timeout {
            let killed = self.killed();
            let mut seen: Option<(Option<u64>, State)> = None;
            let mut agree = true;
            for i in (0..self.size()).filter(|i| !killed.contains(i)) {
                match self.local_state(i, Duration::from_millis(500)).await {
                    Ok(s) if seen.as_ref().is_none_or(|p| *p == s) => seen = Some(s),
                    Ok((index, _)) => {
                        last =
                            format!("{} is at index {index:?}, another node at {:?}", self.inner.names[i], seen.as_ref().and_then(|s| s.0));
                        agree = false;
                        break;
                    }
                    Err(e) => {
                        last = format!("{}: {e}", self.inner.names[i]);
                        agree = false;
                        break;
                    }
                }
            }
            if let (true, Some((Some(_), state))) = (agree, seen) {
                return Ok((start.elapsed(), state));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("not converged within {timeout:?}: {last}"))
    }

    pub(crate) async fn stop(&self) {
        self.inner.control.stop().await;
        self.inner.client.shutdown();
    }
}

impl fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster").field("backend", &self.inner.spec.backend).field("nodes", &self.inner.names).finish()
    }
}

/// The exporter of [`ClusterSpec::otlp_endpoint`], made on the run's
/// runtime.
fn traces(spec: &ClusterSpec) -> Result<Option<foundation_cluster::traces::Tracer>, RunError> {
    spec.otlp_endpoint.as_deref().map(foundation_cluster::traces::Tracer::otlp).transpose().map_err(|e| RunError::Spec(e.to_string()))
}
