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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use foundation::events::{EVENTS_DEFAULT, EventStore};
use foundation::{Node, NodeConfig};
use serde::{Deserialize, Serialize};

use crate::consensus::{Consensus, ConsensusConfig, ConsensusError, Member, NodeId};
use crate::mesh::{Cluster, ClusterConfig, ClusterError, NodeEvent};
use crate::secret::ClusterSecret;
use crate::services::{ConfigService, Registry, Telemetry};

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
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            if std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?.next().is_some() {
                return Err(err("it is not empty and has no identity.json: not a Foundation data directory".into()));
            }
            let text = serde_json::to_string_pretty(want).expect("an identity serializes");
            std::fs::write(&file, text).map_err(|e| err(e.to_string()))?;
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
    pub consensus: Consensus,
    pub events: Arc<EventStore>,
    pub telemetry: Telemetry,
    pub config: ConfigService,
    pub registry: Registry,
    pub http_addr: Option<String>,
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
        let node = Node::with_config(NodeConfig { name: config.name.clone(), ..NodeConfig::default() })
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let cluster = Cluster::start(node, ClusterConfig::new(config.name.clone(), config.listen.clone(), config.secret.clone())).await?;
        let mut cc = ConsensusConfig::new(config.id);
        if config.lan {
            cc = cc.lan();
        }
        if let Some(dir) = &config.data_dir {
            cc = cc.durable(dir.join("raft"));
        }
        // A peer that is up and refuses our secret means a wrong secret:
        // stop now, before touching any data. (Peers not up yet are dialed
        // again in the background.)
        for peer in &config.peers {
            if let Err(ClusterError::Handshake { source, .. }) = cluster.connect(&peer.addr).await {
                let secret_refused = matches!(&source, crate::handshake::HandshakeError::BadSecret { .. })
                    || matches!(&source, crate::handshake::HandshakeError::Refused(why) if why.contains("secret"));
                if secret_refused {
                    cluster.shutdown();
                    return Err(ServerError::Secret { peer: peer.addr.clone(), reason: source.to_string() });
                }
            }
        }
        let fresh = match &config.data_dir {
            Some(dir) => match claim(dir, &Identity { cluster_id: config.cluster_id.clone(), id: config.id, name: config.name.clone() }) {
                Ok(fresh) => fresh,
                Err(e) => {
                    cluster.shutdown();
                    return Err(e);
                }
            },
            None => true,
        };
        let consensus = match Consensus::start(&cluster, cc).await {
            Ok(c) => c,
            Err(e) => {
                cluster.shutdown();
                return Err(e.into());
            }
        };
        let events = Arc::new(EventStore::new(EVENTS_DEFAULT));
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut server = ServerInner {
            cluster: cluster.clone(),
            consensus: consensus.clone(),
            events: events.clone(),
            telemetry: Telemetry::new(),
            config: ConfigService::new(consensus.clone()),
            registry: Registry::new(consensus.clone(), cluster.node().clone()),
            http_addr: None,
            stop,
        };
        if let Some(addr) = &config.http {
            let (bound, serve) = crate::admin::bind(addr).await.map_err(|reason| ServerError::Http { addr: addr.clone(), reason })?;
            server.http_addr = Some(bound);
            let inner = Arc::new(server);
            let app = Self { inner };
            let mut stopped = app.inner.stop.subscribe();
            let router = crate::admin::router(app.clone());
            tokio::spawn(async move {
                let _ = serve
                    .serve(router, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
            });
            app.begin(&config, fresh);
            return Ok(app);
        }
        let app = Self { inner: Arc::new(server) };
        app.begin(&config, fresh);
        Ok(app)
    }

    /// Background work: dial the peers, record mesh events, and initialize
    /// the group on a fresh first node.
    fn begin(&self, config: &ServerConfig, fresh: bool) {
        for peer in config.peers.clone() {
            let cluster = self.inner.cluster.clone();
            let mut stop = self.inner.stop.subscribe();
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(50);
                while !cluster.peers().contains(&peer.name) && !*stop.borrow() {
                    if let Err(e) = cluster.connect(&peer.addr).await {
                        tracing::debug!(peer = %peer.name, error = %e, "peer not reachable yet");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            });
        }
        let mut mesh = self.inner.cluster.subscribe();
        let events = self.inner.events.clone();
        let node = self.inner.cluster.node().clone();
        tokio::spawn(async move {
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
                events.store(now_ms(&node), kind, None, data);
            }
        });
        let lowest = config.peers.iter().all(|p| p.id > config.id);
        if fresh && lowest {
            let mut members: BTreeMap<NodeId, Member> =
                config.peers.iter().map(|p| (p.id, Member { name: p.name.clone(), addr: p.addr.clone() })).collect();
            members.insert(config.id, Member { name: config.name.clone(), addr: self.inner.cluster.addr().to_owned() });
            let consensus = self.inner.consensus.clone();
            tokio::spawn(async move {
                match consensus.initialize(members).await {
                    Ok(()) | Err(ConsensusError::AlreadyInitialized) => {}
                    Err(e) => tracing::error!(error = %e, "could not initialize the consensus group"),
                }
            });
        }
    }

    /// The mesh membership.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// The consensus member.
    pub fn consensus(&self) -> &Consensus {
        &self.inner.consensus
    }

    /// The event store (the Events service).
    pub fn events(&self) -> &Arc<EventStore> {
        &self.inner.events
    }

    /// The Telemetry service (its recorder backs `GET /metrics`).
    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    /// The cluster-wide Config service.
    pub fn config(&self) -> &ConfigService {
        &self.inner.config
    }

    /// The cluster-wide Registry service.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Where the admin API listens, if it does.
    pub fn http_addr(&self) -> Option<&str> {
        self.inner.http_addr.as_deref()
    }

    /// Stops the admin API, the consensus member (closing its data
    /// directory) and the mesh.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        self.inner.consensus.shutdown().await;
        self.inner.cluster.shutdown();
    }
}
