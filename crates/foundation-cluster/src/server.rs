//! A running node: the cluster mesh, a consensus member, the event store,
//! metrics, and the admin HTTP API ([`crate::admin`]). What `foundation
//! node` runs.
//!
//! # Forming a group
//! Every node is started with its own id and name and the list of its
//! initial peers (`id=name@addr`). Each node dials its peers until it
//! reaches them. On its first start (an empty data directory), the node
//! with the smallest id initializes the Raft group with itself and its
//! peers; later starts recover from the data directory.
//!
//! # Identity
//! A data directory remembers the cluster id, the node id and the name it
//! was created for (`identity.json`). A node started on a directory of
//! another cluster or another node refuses to start and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use foundation::events::{EVENTS_DEFAULT, EventStore};
use foundation::rt::{Rt, RtConfig};
use foundation::{Node, NodeConfig};
use serde::{Deserialize, Serialize};

use crate::admin::{AdminConfig, AdminToken};
use crate::consensus::{Consensus, ConsensusConfig, ConsensusError, DiskFaults, Member, MemoryDisk, NodeId, Storage};
use crate::mesh::{Cluster, ClusterConfig, ClusterError, NodeEvent};
use crate::secret::ClusterSecret;
use crate::services::{ConfigService, Registry, Telemetry};
use crate::tls::TlsConfig;

mod distributed;
mod lifecycle;

pub use distributed::{DistributedCluster, DistributedConfig, start_distributed_cluster};

/// A peer as given on the command line: `id=name@addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// Its consensus id.
    pub id: NodeId,
    /// Its node name.
    pub name: String,
    /// Its cluster listen address.
    pub addr: String,
}

impl std::str::FromStr for PeerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a peer; write it as ID=NAME@HOST:PORT, e.g. 2=n2@127.0.0.1:7002");
        let (id, rest) = s.split_once('=').ok_or_else(bad)?;
        let (name, addr) = rest.split_once('@').ok_or_else(bad)?;
        let id = id.trim().parse().map_err(|_| bad())?;
        if name.is_empty() || addr.is_empty() || !addr.contains(':') {
            return Err(bad());
        }
        Ok(Self { id, name: name.to_owned(), addr: addr.to_owned() })
    }
}

/// A service a node can run (the seed's chaos test starts
/// `[:config, :events, :telemetry, :consensus, :coordination]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// The Raft member (needed by config, coordination and registry).
    Consensus,
    /// `cluster_status`, locks and barriers (`GET /status`).
    Coordination,
    /// Cluster-wide configuration.
    Config,
    /// Cluster-wide process names.
    Registry,
    /// The event store (`GET /events`).
    Events,
    /// Telemetry and metrics (`GET /metrics`).
    Telemetry,
}

impl Service {
    /// Every service.
    pub const ALL: [Service; 6] = [Self::Consensus, Self::Coordination, Self::Config, Self::Registry, Self::Events, Self::Telemetry];

    /// Its name (as `--services` takes it).
    pub fn name(self) -> &'static str {
        match self {
            Self::Consensus => "consensus",
            Self::Coordination => "coordination",
            Self::Config => "config",
            Self::Registry => "registry",
            Self::Events => "events",
            Self::Telemetry => "telemetry",
        }
    }
}

impl std::str::FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
            format!("unknown service {s:?}; the services are {}", names.join(", "))
        })
    }
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Consensus id (unique, never reused).
    pub id: NodeId,
    /// Node name (unique in the cluster).
    pub name: String,
    /// Cluster listen address.
    pub listen: String,
    /// Admin HTTP address, if any.
    pub http: Option<String>,
    /// Who may drive the admin API: with `http`, a token (or the data
    /// directory's `admin.token`) is required; the default has none.
    pub admin: AdminConfig,
    /// Initial peers.
    pub peers: Vec<PeerSpec>,
    /// Data directory (durable state); `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// Names the cluster: a data directory of another cluster is refused.
    pub cluster_id: String,
    /// Consensus timers: the LAN profile instead of the defaults.
    pub lan: bool,
    /// The services to run (config, coordination and registry need consensus).
    pub services: BTreeSet<Service>,
    /// The runtime seam: seed, clock and network (a simulated network and
    /// clock under the test kit's simulator).
    pub rt: RtConfig,
    /// Without a data directory: a disk in memory that outlives this
    /// server, so a restart on it recovers (the simulator's data
    /// directory). `None` with no data directory keeps everything in this
    /// server's memory.
    pub disk: Option<MemoryDisk>,
    /// The mesh's largest frame; `None` is the default
    /// ([`crate::frame::FRAME_BYTES_DEFAULT`]). The test kit's simulator
    /// sets a small one, so that a state past it is cheap to build.
    pub frame_limit: Option<usize>,
    /// Storage faults injected by a test into this node's consensus store
    /// (none by default; see [`crate::consensus::disk_faults`]).
    pub disk_faults: DiskFaults,
    /// Mutual TLS for the mesh, the secret handshake inside it; `None`:
    /// none (a node on a non-loopback address then warns at start).
    pub tls: Option<TlsConfig>,
    /// When snapshots are taken and how much log stays behind them.
    pub snapshots: SnapshotSettings,
    /// Where this node's spans go (OTLP, [`crate::traces`]); `None`: no
    /// spans are made.
    pub traces: Option<crate::traces::Tracer>,
}

/// When a consensus member takes a snapshot and how much log it keeps
/// behind one; `None`: the default (see [`ConsensusConfig`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotSettings {
    /// Bytes of applied entries between snapshots.
    pub log_bytes: Option<u64>,
    /// Log entries kept behind a snapshot.
    pub logs_kept: Option<u64>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory belongs to another cluster or node, or is unreadable.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The mesh could not start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Consensus could not start (a corrupt log, for one).
    #[error("consensus: {0}")]
    Consensus(#[from] ConsensusError),
    /// The admin HTTP address could not be bound.
    #[error("admin HTTP on {addr}: {reason}")]
    Http {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A peer refused this node's secret: it is not this cluster's secret.
    #[error("peer {peer} refused this node's cluster secret ({reason}); check --secret, FOUNDATION_SECRET or the secret file")]
    Secret {
        /// The peer's address.
        peer: String,
        /// What it said.
        reason: String,
    },
}

#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
struct Identity {
    cluster_id: String,
    id: NodeId,
    name: String,
}

/// Creates `dir` (and its parents) if needed, readable by its owner only
/// (0700), and makes an existing one so.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `file` whole or not at all: a temporary file (0600) written and
/// synced, renamed over it, and the directory synced.
pub(crate) fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    if let Some(parent) = file.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Checks (or, on a fresh directory, writes) the directory's identity.
/// Returns whether the directory was fresh.
fn claim(dir: &Path, want: &Identity) -> Result<bool, ServerError> {
    let err = |reason: String| ServerError::DataDir { path: dir.to_owned(), reason };
    let file = dir.join("identity.json");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let found: Identity = serde_json::from_str(&text).map_err(|e| err(format!("identity.json is corrupt: {e}")))?;
            if found.cluster_id != want.cluster_id {
                return Err(err(format!(
                    "it belongs to cluster {:?}, not {:?}; use another directory or the right --cluster-id",
                    found.cluster_id, want.cluster_id
                )));
            }
            if found.id != want.id || found.name != want.name {
                return Err(err(format!("it belongs to node {} (id {}), not {} (id {})", found.name, found.id, want.name, want.id)));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            private_dir(dir).map_err(|e| err(e.to_string()))?;
            if std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?.next().is_some() {
                return Err(err("it is not empty and has no identity.json: not a Foundation data directory".into()));
            }
            let text = serde_json::to_string_pretty(want).expect("an identity serializes");
            write_atomically(&file, text.as_bytes()).map_err(|e| err(e.to_string()))?;
            Ok(true)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<ServerInner>,
}

pub(crate) struct ServerInner {
    pub cluster: Cluster,
    pub consensus: Option<Consensus>,
    pub coordination: bool,
    pub events: Option<Arc<EventStore>>,
    pub telemetry: Option<Telemetry>,
    pub config: Option<ConfigService>,
    pub registry: Option<Registry>,
    pub http_addr: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub stop: tokio::sync::watch::Sender<bool>,
}

/// Milliseconds since the Unix epoch, from the node's clock.
pub(crate) fn now_ms(node: &Node) -> u64 {
    node.rt().system_time().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Server {
    /// Starts a node: checks the data directory, joins the mesh, starts the
    /// consensus member (initializing the group on first start if this node
    /// has the smallest id), and serves the admin API.
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        if config.peers.iter().any(|p| p.id == config.id || p.name == config.name) {
            return Err(ServerError::Config(format!("a peer has this node's own id {} or name {}", config.id, config.name)));
        }
        let wants = |s: Service| config.services.contains(&s);
        for needs in [Service::Config, Service::Coordination, Service::Registry] {
            if wants(needs) && !wants(Service::Consensus) {
                return Err(ServerError::Config(format!("the {} service needs the consensus service", needs.name())));
            }
        }
        // A restart is a new incarnation: pids of the old one never match
        // processes of the new (the node clock's milliseconds, wrapping
        // every 49 days).
        let creation = Rt::new(config.rt.clone()).unix_millis() as u32;
        let node = Node::with_config(NodeConfig { name: config.name.clone(), creation, rt: config.rt.clone(), ..NodeConfig::default() })
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let mut mesh = ClusterConfig::new(config.name.clone(), config.listen.clone(), config.secret.clone());
        if let Some(limit) = config.frame_limit {
            mesh.frame_limit = limit;
        }
        mesh.tls = config.tls.clone();
        mesh.traces = config.traces.clone();
        let cluster = Cluster::start(node, mesh).await?;
        // A peer that is up and refuses our secret means a wrong secret:
        // stop now, before touching any data. (Peers not up yet are dialed
        // again in the background.)
        for peer in &config.peers {
            if let Err(ClusterError::Handshake { source, .. }) = cluster.connect_to(&peer.name, &peer.addr).await {
                let secret_refused = matches!(&source, crate::handshake::HandshakeError::BadSecret { .. })
                    || matches!(&source, crate::handshake::HandshakeError::Refused(why) if why.contains("secret"));
                if secret_refused {
                    cluster.shutdown();
                    return Err(ServerError::Secret { peer: peer.addr.clone(), reason: source.to_string() });
                }
            }
        }
        match Self::start_services(&config, cluster.clone()).await {
            Ok(app) => {
                lifecycle::started(&config, app.cluster().addr(), app.http_addr());
                Ok(app)
            }
            Err(e) => {
                cluster.shutdown();
                Err(e)
            }
        }
    }

    async fn start_services(config: &ServerConfig, cluster: Cluster) -> Result<Self, ServerError> {
        let wants = |s: Service| config.services.contains(&s);
        let fresh = match &config.data_dir {
            Some(dir) => claim(dir, &Identity { cluster_id: config.cluster_id.clone(), id: config.id, name: config.name.clone() })?,
            None => true,
        };
        let telemetry = wants(Service::Telemetry).then(Telemetry::new);
        let consensus = if wants(Service::Consensus) {
            let mut cc = ConsensusConfig::new(config.id);
            cc.disk_faults = config.disk_faults.clone();
            cc.cluster_id = config.cluster_id.clone();
            // A data directory that was claimed before: its Raft database
            // must be there (an empty one is refused).
            cc.existing = config.data_dir.is_some() && !fresh;
            if config.lan {
                cc = cc.lan();
            }
            if let Some(bytes) = config.snapshots.log_bytes {
                cc.snapshot_log_bytes = bytes;
            }
            if let Some(kept) = config.snapshots.logs_kept {
                cc.logs_kept = kept;
            }
            cc.telemetry = telemetry.clone();
            if let Some(dir) = &config.data_dir {
                cc = cc.durable(dir.join("raft"));
            } else if let Some(disk) = &config.disk {
                cc.storage = Storage::Disk(disk.clone());
            }
            // An empty store is refused if a peer knows this id ran before
            // (a data directory lost): the member dials them first.
            cc.peers = config.peers.iter().map(|p| (p.name.clone(), p.addr.clone())).collect();
            Some(Consensus::start(&cluster, cc).await?)
        } else {
            None
        };
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut inner = ServerInner {
            cluster: cluster.clone(),
            coordination: wants(Service::Coordination),
            events: wants(Service::Events).then(|| Arc::new(EventStore::new(EVENTS_DEFAULT))),
            telemetry,
            config: consensus.clone().filter(|_| wants(Service::Config)).map(ConfigService::new),
            registry: consensus.clone().filter(|_| wants(Service::Registry)).map(|c| Registry::new(c, cluster.node().clone())),
            consensus,
            http_addr: None,
            admin_token_file: None,
            stop,
        };
        let mut serving = None;
        if let Some(addr) = &config.http {
            match crate::admin::bind(cluster.node().rt(), addr, &config.admin, config.data_dir.as_deref()).await {
                Ok(serve) => {
                    inner.http_addr = Some(serve.addr().to_owned());
                    inner.admin_token_file = serve.token_file().map(Path::to_owned);
                    serving = Some(serve);
                }
                Err(e) => {
                    if let Some(c) = &inner.consensus {
                        c.shutdown().await;
                    }
                    return Err(e);
                }
            }
        }
        let app = Self { inner: Arc::new(inner) };
        if let Some(serve) = serving {
            serve.start(app.clone(), app.inner.stop.subscribe());
        }
        app.begin(config, fresh);
        Ok(app)
    }

    /// Background work: dial the peers, record mesh events, and initialize
    /// the group on a fresh first node.
    fn begin(&self, config: &ServerConfig, fresh: bool) {
        crate::admin::observer::register_view_rpc(&self.inner);
        for peer in config.peers.clone() {
            let cluster = self.inner.cluster.clone();
            let mut stop = self.inner.stop.subscribe();
            self.inner.cluster.node().rt().spawn(async move {
                let mut delay = Duration::from_millis(50);
                while !cluster.peers().contains(&peer.name) && !*stop.borrow() {
                    if let Err(e) = cluster.connect_to(&peer.name, &peer.addr).await {
                        tracing::debug!(peer = %peer.name, error = %e, "peer not reachable yet");
                    }
                    tokio::select! {
                        biased;
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            });
        }
        if self.inner.events.is_some() || self.inner.telemetry.is_some() {
            self.record_mesh_events(self.inner.events.clone(), self.inner.telemetry.clone());
        }
        if let Some(telemetry) = self.inner.telemetry.clone() {
            self.inner.cluster.set_telemetry(telemetry.clone());
            self.inner.cluster.node().observe(move |event| report(&telemetry, event));
        }
        let lowest = config.peers.iter().all(|p| p.id > config.id);
        if let Some(consensus) = self.inner.consensus.clone().filter(|_| fresh && lowest) {
            let mut members: BTreeMap<NodeId, Member> =
                config.peers.iter().map(|p| (p.id, Member { name: p.name.clone(), addr: p.addr.clone() })).collect();
            members.insert(config.id, Member { name: config.name.clone(), addr: self.inner.cluster.addr().to_owned() });
            self.inner.cluster.node().rt().spawn(async move {
                match consensus.initialize(members).await {
                    Ok(()) | Err(ConsensusError::AlreadyInitialized) => {}
                    Err(e) => tracing::error!(error = %e, "could not initialize the consensus group"),
                }
            });
        }
    }

    /// Mesh up/down events into the event store (`node.up`, `node.down`)
    /// and telemetry (`foundation.node.up`, `foundation.node.down`).
    fn record_mesh_events(&self, events: Option<Arc<EventStore>>, telemetry: Option<Telemetry>) {
        let mut mesh = self.inner.cluster.subscribe();
        let node = self.inner.cluster.node().clone();
        node.rt().clone().spawn(async move {
            loop {
                let (kind, peer, reason) = match mesh.recv().await {
                    Ok(NodeEvent::Up { node }) => ("node.up", node, String::new()),
                    Ok(NodeEvent::Down { node, reason }) => ("node.down", node, reason),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let mut data = BTreeMap::from([("node".to_owned(), peer)]);
                if !reason.is_empty() {
                    data.insert("reason".into(), reason);
                }
                if let Some(t) = &telemetry {
                    t.emit(&format!("foundation.{kind}"), &BTreeMap::new(), &data);
                }
                if let Some(events) = &events {
                    events.store(now_ms(&node), kind, None, data);
                }
            }
        });
    }

    /// The mesh membership.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// The consensus member, if the service runs.
    pub fn consensus(&self) -> Option<&Consensus> {
        self.inner.consensus.as_ref()
    }

    /// Coordination (`cluster_status`, locks, barriers: on the consensus
    /// member), if the service runs.
    pub fn coordination(&self) -> Option<&Consensus> {
        self.inner.consensus.as_ref().filter(|_| self.inner.coordination)
    }

    /// The event store (the Events service), if it runs.
    pub fn events(&self) -> Option<&Arc<EventStore>> {
        self.inner.events.as_ref()
    }

    /// The Telemetry service (its recorder backs `GET /metrics`), if it runs.
    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.inner.telemetry.as_ref()
    }

    /// The cluster-wide Config service, if it runs.
    pub fn config(&self) -> Option<&ConfigService> {
        self.inner.config.as_ref()
    }

    /// The cluster-wide Registry service, if it runs.
    pub fn registry(&self) -> Option<&Registry> {
        self.inner.registry.as_ref()
    }

    /// The services running.
    pub fn services(&self) -> BTreeSet<Service> {
        let i = &self.inner;
        let running = [
            (Service::Consensus, i.consensus.is_some()),
            (Service::Coordination, self.coordination().is_some()),
            (Service::Config, i.config.is_some()),
            (Service::Registry, i.registry.is_some()),
            (Service::Events, i.events.is_some()),
            (Service::Telemetry, i.telemetry.is_some()),
        ];
        running.into_iter().filter(|(_, on)| *on).map(|(s, _)| s).collect()
    }

    /// Where the admin API listens, if it does.
    pub fn http_addr(&self) -> Option<&str> {
        self.inner.http_addr.as_deref()
    }

    /// The data directory's admin token file, when the token is kept there.
    pub fn admin_token_file(&self) -> Option<&Path> {
        self.inner.admin_token_file.as_deref()
    }

    /// Stops the admin API, the consensus member (closing its data
    /// directory) and the mesh.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        if let Some(c) = &self.inner.consensus {
            c.shutdown().await;
        }
        self.inner.cluster.shutdown();
        lifecycle::stopped(self.inner.cluster.name());
    }
}

/// A node's rare framework event as telemetry: `foundation.supervisor.restart`
/// (measurement `restarts`; metadata `supervisor`, `child`, `reason`, the
/// reason's kind) and `foundation.supervisor.intensity` (`intensity`,
/// `period_ms`; `supervisor`).
fn report(telemetry: &Telemetry, event: &foundation::Observed) {
    match event {
        foundation::Observed::Restart { supervisor, child, reason, restarts } => {
            let kind = foundation::stats::EXIT_KINDS[foundation::stats::reason_kind(reason)];
            let meta = BTreeMap::from([
                ("supervisor".to_owned(), supervisor.to_string()),
                ("child".to_owned(), child.clone()),
                ("reason".to_owned(), kind.to_owned()),
            ]);
            telemetry.emit("foundation.supervisor.restart", &BTreeMap::from([("restarts".to_owned(), f64::from(*restarts))]), &meta);
        }
        foundation::Observed::IntensityReached { supervisor, intensity, period } => {
            let m = BTreeMap::from([("intensity".to_owned(), f64::from(*intensity)), ("period_ms".to_owned(), period.as_millis() as f64)]);
            telemetry.emit("foundation.supervisor.intensity", &m, &BTreeMap::from([("supervisor".to_owned(), supervisor.to_string())]));
        }
        _ => {}
    }
}
