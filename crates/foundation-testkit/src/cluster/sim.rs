//! The simulated backend: every node is a turmoil host, the test body runs
//! in a turmoil client host ("client"), and the whole run is stepped on
//! the calling thread in virtual time, [`TICK`] per step.
//!
//! Determinism: turmoil's RNG, each node's [`foundation::rt::Rt`] seed and
//! openraft's timers (`consensus::runtime`) all come from the spec's seed;
//! wall-clock time is the simulated clock ([`Clock::Simulated`]) from a
//! fixed epoch. Two runs of one seed take the same steps, with or without
//! `--cfg tokio_unstable`: nothing draws from tokio's RNG, which only that
//! flag seeds (every `select!` is biased, and openraft's watch is
//! `consensus::watch`). A host's task that panics fails the run
//! ([`RunError::TaskPanic`], from `foundation::rt::take_task_panic`).
//!
//! Faults: partitions, clogs and pauses are turmoil's partition and hold,
//! applied from inside the simulation; kills, restarts and link settings
//! need the simulator itself, so the body queues them and the step loop
//! applies them between two steps (the body waits for that). A node's
//! durable state is a [`MemoryDisk`] kept outside its host, so a crash
//! loses its processes and connections but not its Raft log.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foundation::rt::net::{BoxFuture, BoxStream, Listener, Network};
use foundation::rt::{Clock, Entropy, RtConfig, Spawner};
use foundation::{Node, NodeConfig};
use foundation_cluster::consensus::MemoryDisk;
use foundation_cluster::mesh::{Cluster, ClusterConfig};
use foundation_cluster::server::{PeerSpec, Server, ServerConfig};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{
    ClusterSpec, Control, Fault, FaultError, Run, RunError, Steps, TestCluster, connect_all, node_name, node_seed, secret, separated_pairs,
};

/// The cluster port every simulated node listens on.
const PORT: u16 = 7000;
/// The simulated wall clock starts here (2026-01-01T00:00:00Z).
const EPOCH_SECS: u64 = 1_767_225_600;
/// Message latency on a healthy link: uniform in this range.
const LATENCY_MIN: Duration = Duration::from_millis(1);
const LATENCY_MAX: Duration = Duration::from_millis(5);
/// Virtual time per simulation step.
const TICK: Duration = Duration::from_millis(2);
/// Segments a socket may queue (turmoil panics past it).
const TCP_CAPACITY: usize = 1 << 16;
const CLIENT: &str = "client";

/// The network seam on turmoil's simulated TCP. Addresses are
/// `host:port`, resolved by turmoil's DNS.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilNetwork;

/// A listener bound on every address of its host, advertised under the
/// host name it was asked for (turmoil binds only unspecified addresses).
struct SimListener {
    inner: turmoil::net::TcpListener,
    host: String,
}

impl Listener for SimListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, String)>> {
        Box::pin(async move {
            let (stream, peer) = self.inner.accept().await?;
            Ok((Box::new(stream) as BoxStream, peer.to_string()))
        })
    }

    fn local_addr(&self) -> io::Result<String> {
        Ok(format!("{}:{}", self.host, self.inner.local_addr()?.port()))
    }
}

impl Network for TurmoilNetwork {
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let (host, port) = addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: not host:port")))?;
            let inner = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
            Ok(Box::new(SimListener { inner, host: host.to_owned() }) as Box<dyn Listener>)
        })
    }

    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move { Ok(Box::new(turmoil::net::TcpStream::connect(addr).await?) as BoxStream) })
    }
}

/// What only the step loop can do.
enum SimCmd {
    Crash(String),
    Bounce(String),
    Link { a: String, b: String, latency: Option<Duration>, loss: f64 },
}

type Queue = Arc<Mutex<Vec<(SimCmd, oneshot::Sender<()>)>>>;

struct SimControl {
    names: Vec<String>,
    queue: Queue,
    /// Each node's disk, outliving its host.
    disks: Vec<MemoryDisk>,
    starts: Starts,
}

/// How each node's last start went: a node that refuses to start (its
/// storage is lost or corrupt) stays down, and its restart says why,
/// instead of ending the whole simulation.
#[derive(Clone, Debug, PartialEq)]
enum Start {
    Starting,
    Up,
    Refused(String),
}

type Starts = Arc<Mutex<Vec<Start>>>;

/// Virtual time a restart waits for the node to be up or refuse.
const START_WAIT: Duration = Duration::from_secs(30);

impl SimControl {
    async fn step_loop(&self, cmd: SimCmd) -> Result<(), FaultError> {
        let (tx, rx) = oneshot::channel();
        self.queue.lock().push((cmd, tx));
        rx.await.map_err(|_| FaultError::Backend("the simulation ended".into()))
    }

    fn others(&self, node: usize) -> Vec<String> {
        self.names.iter().enumerate().filter(|(i, _)| *i != node).map(|(_, n)| n.clone()).chain([CLIENT.to_owned()]).collect()
    }
}

impl Control for SimControl {
    fn apply<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async move {
            let name = |i: usize| self.names[i].as_str();
            match fault {
                Fault::Partition { groups } => {
                    for (a, b) in separated_pairs(self.names.len(), groups) {
                        turmoil::partition(name(a), name(b));
                    }
                }
                Fault::Cut { pairs } => {
                    for &(a, b) in pairs {
                        turmoil::partition(name(a), name(b));
                    }
                }
                Fault::PartitionOneway { from, to } => {
                    for &a in from {
                        for &b in to.iter().filter(|b| **b != a) {
                            turmoil::partition_oneway(name(a), name(b));
                        }
                    }
                }
                Fault::Heal => {
                    for (a, an) in self.names.iter().enumerate() {
                        for bn in &self.names[a + 1..] {
                            turmoil::repair(an.as_str(), bn.as_str());
                            turmoil::release(an.as_str(), bn.as_str());
                            self.step_loop(SimCmd::Link { a: an.clone(), b: bn.clone(), latency: None, loss: 0.0 }).await?;
                        }
                    }
                }
                Fault::Kill { node } => self.step_loop(SimCmd::Crash(name(*node).to_owned())).await?,
                Fault::Restart { node } => {
                    self.starts.lock()[*node] = Start::Starting;
                    self.step_loop(SimCmd::Bounce(name(*node).to_owned())).await?;
                    let deadline = tokio::time::Instant::now() + START_WAIT;
                    loop {
                        let start = self.starts.lock()[*node].clone();
                        match start {
                            Start::Up => break,
                            Start::Refused(why) => return Err(FaultError::Backend(format!("{} refused to start: {why}", name(*node)))),
                            Start::Starting if tokio::time::Instant::now() >= deadline => {
                                return Err(FaultError::Backend(format!("{} did not start within {START_WAIT:?}", name(*node))));
                            }
                            Start::Starting => tokio::time::sleep(TICK).await,
                        }
                    }
                }
                Fault::Pause { node } => {
                    for other in self.others(*node) {
                        turmoil::hold(name(*node), other.as_str());
                    }
                }
                Fault::Resume { node } => {
                    for other in self.others(*node) {
                        turmoil::release(name(*node), other.as_str());
                    }
                }
                Fault::Clog { a, b } => turmoil::hold(name(*a), name(*b)),
                Fault::Unclog { a, b } => turmoil::release(name(*a), name(*b)),
                Fault::ClockSkew { .. } => return Err(FaultError::Backend("a clock skew goes through the node's agent".into())),
                Fault::WipeDisk { node } => self.disks[*node].wipe(),
                Fault::TruncateLog { node, entries } => {
                    self.disks[*node].drop_log_tail(*entries);
                }
                Fault::DiskError { .. } | Fault::DiskLatency { .. } => unreachable!("set on the node's DiskFaults by TestCluster::apply"),
                Fault::Throttle { .. } => unreachable!("refused in simulation by TestCluster::apply"),
                Fault::SetLink { a, b, latency_ms, loss } => {
                    let cmd = SimCmd::Link {
                        a: name(*a).to_owned(),
                        b: name(*b).to_owned(),
                        latency: Some(Duration::from_millis(*latency_ms)),
                        loss: *loss,
                    };
                    self.step_loop(cmd).await?;
                }
            }
            Ok(())
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        // The simulation ends with the body; the hosts go with it.
        Box::pin(async {})
    }
}

fn sim_rt(seed: u64) -> RtConfig {
    let epoch = UNIX_EPOCH + Duration::from_secs(EPOCH_SECS) + turmoil::sim_elapsed().unwrap_or_default();
    RtConfig {
        seed,
        clock: Clock::Simulated { epoch, start: tokio::time::Instant::now() },
        network: Arc::new(TurmoilNetwork),
        // Handshake challenges from the seed: a run replays exactly.
        entropy: Entropy::Seeded,
        // The host's runtime, which the seed schedules (never a pool).
        spawner: Spawner::Ambient,
    }
}

fn server_config(spec: &ClusterSpec, i: usize, disk: &MemoryDisk) -> ServerConfig {
    let peers = (0..spec.nodes)
        .filter(|j| *j != i)
        .map(|j| PeerSpec { id: j as u64 + 1, name: node_name(j), addr: format!("{}:{PORT}", node_name(j)) })
        .collect();
    ServerConfig {
        traces: None,
        id: i as u64 + 1,
        name: node_name(i),
        listen: format!("{}:{PORT}", node_name(i)),
        http: None,
        admin: Default::default(),
        peers,
        data_dir: None,
        secret: secret(),
        cluster_id: "foundation-sim".into(),
        lan: false,
        services: spec.services.clone(),
        rt: RtConfig { spawner: Spawner::Ambient, ..RtConfig::default() },
        disk: Some(disk.clone()),
        frame_limit: spec.frame_limit,
        disk_faults: spec.disk_faults(i),
        tls: None,
        snapshots: Default::default(),
    }
}

pub(super) fn run<T, F, Fut>(spec: &ClusterSpec, body: F) -> Result<Run<T>, RunError>
where
    T: Send + 'static,
    F: FnOnce(TestCluster) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let wall = std::time::Instant::now();
    // Every host's tasks in spawn order (see `spawn_locally`): a seed is the
    // same run however many runs this process made before.
    let _local = foundation::rt::spawn_locally();
    let mut sim = turmoil::Builder::new()
        .rng_seed(spec.seed)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(spec.sim_limit)
        .tick_duration(TICK)
        .min_message_latency(LATENCY_MIN)
        .max_message_latency(LATENCY_MAX)
        .tcp_capacity(TCP_CAPACITY)
        .build();
    let disks: Vec<MemoryDisk> = (0..spec.nodes).map(|_| MemoryDisk::new()).collect();
    let starts: Starts = Arc::new(Mutex::new(vec![Start::Starting; spec.nodes]));
    for (i, disk) in disks.iter().cloned().enumerate() {
        let spec = spec.clone();
        let seed = node_seed(spec.seed, i as u64);
        let starts = starts.clone();
        sim.host(node_name(i), move || {
            let mut config = server_config(&spec, i, &disk);
            let starts = starts.clone();
            async move {
                config.rt = sim_rt(seed);
                let started = match Server::start(config).await {
                    Ok(server) => crate::agent::install(&server, None).await.map(|()| server),
                    Err(e) => Err(e.to_string()),
                };
                let server = match started {
                    Ok(server) => {
                        starts.lock()[i] = Start::Up;
                        Some(server)
                    }
                    Err(why) => {
                        // Down, as a process that exited: the restart says why.
                        starts.lock()[i] = Start::Refused(why);
                        None
                    }
                };
                std::future::pending::<()>().await;
                drop(server);
                Ok(())
            }
        });
    }
    let queue: Queue = Arc::default();
    let steps = Steps::default();
    let outcome: Rc<RefCell<Option<Result<T, RunError>>>> = Rc::default();
    {
        let spec = spec.clone();
        let queue = queue.clone();
        let outcome = outcome.clone();
        let steps = steps.clone();
        let disks = disks.clone();
        let starts = starts.clone();
        sim.client(CLIENT, async move {
            let node =
                Node::with_config(NodeConfig { name: CLIENT.into(), rt: sim_rt(node_seed(spec.seed, u64::MAX)), ..NodeConfig::default() })
                    .map_err(|e| e.to_string())?;
            let client =
                Cluster::start(node, ClusterConfig::new(CLIENT, format!("{CLIENT}:{PORT}"), secret())).await.map_err(|e| e.to_string())?;
            let addrs: Vec<String> = (0..spec.nodes).map(|i| format!("{}:{PORT}", node_name(i))).collect();
            let result = match connect_all(&client, &addrs).await {
                Err(e) => Err(RunError::Start(e)),
                Ok(()) => {
                    let names = (0..spec.nodes).map(node_name).collect();
                    let cluster = TestCluster::new(spec, client, Box::new(SimControl { names, queue, disks, starts }), steps);
                    let result = body(cluster.clone()).await.map_err(RunError::Body);
                    cluster.stop().await;
                    result
                }
            };
            *outcome.borrow_mut() = Some(result);
            Ok(())
        });
    }
    loop {
        let done = sim.step().map_err(|e| RunError::Sim(e.to_string()))?;
        if let Some(panic) = foundation::rt::take_task_panic() {
            return Err(RunError::TaskPanic(panic));
        }
        // Virtual time cannot catch a step that spins: the limit is wall time.
        if let Some(limit) = spec.wall_limit.filter(|l| wall.elapsed() > *l) {
            return Err(RunError::WallLimit { limit, step: steps.describe() });
        }
        let commands = std::mem::take(&mut *queue.lock());
        for (cmd, ack) in commands {
            match cmd {
                SimCmd::Crash(host) => sim.crash(host),
                SimCmd::Bounce(host) => sim.bounce(host),
                SimCmd::Link { a, b, latency: Some(l), loss } => {
                    sim.set_link_latency(a.as_str(), b.as_str(), l);
                    sim.set_link_fail_rate(a.as_str(), b.as_str(), loss);
                }
                SimCmd::Link { a, b, latency: None, loss } => {
                    sim.set_link_latency(a.as_str(), b.as_str(), LATENCY_MIN);
                    sim.set_link_max_message_latency(a.as_str(), b.as_str(), LATENCY_MAX);
                    sim.set_link_fail_rate(a.as_str(), b.as_str(), loss);
                }
            }
            let _ = ack.send(());
        }
        if done {
            break;
        }
    }
    let cluster_time = sim.elapsed();
    let result = outcome.borrow_mut().take().unwrap_or_else(|| Err(RunError::Sim("the client ended without a result".into())));
    result.map(|value| Run { value, cluster_time, wall_time: wall.elapsed() })
}
