//! Nodes that find each other: a full mesh of authenticated connections,
//! one per pair, with heartbeats, node up/down events, reconnection with
//! backoff, and explicit `connect` / `disconnect` (for tests that partition).
//!
//! # Semantics
//! - A node listens on its address and dials peers it learns about: from
//!   [`Cluster::connect`], or from a connected peer's list of peers (so
//!   connecting to one member joins the whole cluster).
//! - One connection per pair: if two nodes dial each other at once, the
//!   connection dialed by the node with the smaller name is kept.
//! - Every connection sends a heartbeat each `tick`; a peer silent for
//!   `ticks_to_down` ticks is down (default: 4 × 500 ms = 2 s).
//! - A lost connection is re-dialed with exponential backoff (from
//!   `backoff_min` to `backoff_max`, at most `redial_attempts` times) by the
//!   node with the smaller name. After [`Cluster::disconnect`] nothing is
//!   re-dialed until [`Cluster::connect`] is called for that peer, and the
//!   node that disconnected refuses that peer's automatic re-dials
//!   meanwhile (in the handshake, after the peer proved its name), so the
//!   disconnect holds whichever of the two called it; a `connect` from
//!   either side ends it.
//! - Events ([`NodeEvent`]) go to every subscriber through a bounded
//!   broadcast channel; a subscriber that falls behind skips ahead (and is
//!   told how many it missed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use foundation::{Node, NodeId};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use tokio::sync::broadcast;

use crate::frame::FRAME_BYTES_DEFAULT;
mod accept;
mod conn;
mod error;
mod link;

pub use accept::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, HANDSHAKES_MAX, REFUSAL_WINDOW, REFUSALS_LOGGED_PER_WINDOW};
use accept::{accept_loop, dial};

pub use conn::HANDOVER_MAX;
pub use error::ClusterError;
pub(crate) use link::cut;
use link::{End, Peer, Which, established};

use crate::handshake::DialKind;
use crate::outbox::Outbox;
use crate::secret::ClusterSecret;

/// Frames queued for one peer's writer; past this, senders wait.
pub const PEER_QUEUE_FRAMES: usize = 1024;
/// Bytes queued for one peer's writer; past this, senders wait.
pub const PEER_QUEUE_BYTES: usize = 64 << 20;
/// Small frames are gathered into writes of about this size.
const WRITE_BATCH_BYTES: usize = 256 << 10;
const READ_BUFFER_BYTES: usize = 256 << 10;
/// Events kept for slow subscribers.
pub const EVENT_BUFFER: usize = 1024;

/// How a node joins and watches its cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's name (unique in the cluster).
    pub name: String,
    /// Where to listen (`host:port`; port 0 picks one).
    pub listen: String,
    /// The shared secret.
    pub secret: ClusterSecret,
    /// Heartbeat interval.
    pub tick: Duration,
    /// Silent ticks after which a peer is down.
    pub ticks_to_down: u32,
    /// Largest frame.
    pub frame_limit: usize,
    /// Bound on dialing plus the handshake.
    pub connect_timeout: Duration,
    /// First re-dial delay.
    pub backoff_min: Duration,
    /// Largest re-dial delay.
    pub backoff_max: Duration,
    /// Re-dials of a lost peer before giving up on it.
    pub redial_attempts: u32,
    /// TLS on every connection (both ways), if set.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Where this node's spans go ([`crate::traces`]); `None`: no spans.
    pub traces: Option<crate::traces::Tracer>,
}

impl ClusterConfig {
    /// Defaults around a name, an address and a secret.
    pub fn new(name: impl Into<String>, listen: impl Into<String>, secret: ClusterSecret) -> Self {
        Self {
            name: name.into(),
            listen: listen.into(),
            secret,
            tick: Duration::from_millis(500),
            ticks_to_down: 4,
            frame_limit: FRAME_BYTES_DEFAULT,
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            redial_attempts: 60,
            tls: None,
            traces: None,
        }
    }
}

/// A change in the cluster as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A peer is connected and authenticated.
    Up {
        /// Its name.
        node: String,
    },
    /// A peer is gone.
    Down {
        /// Its name.
        node: String,
        /// Why (silent, connection lost, disconnected).
        reason: String,
    },
}

/// What travels on an established connection (the frame header).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Wire {
    Heartbeat,
    /// The sender's listen address and the peers it knows (name, address).
    Peers {
        me: String,
        known: Vec<(String, String)>,
    },
    /// Remote processes: messages, links, monitors, exit signals.
    Proc(crate::remote::ProcWire),
    /// Remote procedure calls.
    Rpc(crate::rpc::RpcWire),
}
/// A node's membership in a cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ClusterConfig,
    pub(crate) node: Node,
    addr: String,
    peers: Mutex<BTreeMap<String, Peer>>,
    /// The outbox of each connected peer, by the name hash in its pids.
    /// Shared, so that a send clones one `Arc` rather than the outbox's
    /// channel senders (six atomic updates and six more to drop them).
    routes: parking_lot::RwLock<BTreeMap<u32, Arc<Outbox>>>,
    pub(crate) procs: crate::remote::Relations,
    pub(crate) rpc: crate::rpc::Rpcs,
    events: broadcast::Sender<NodeEvent>,
    next_conn: std::sync::atomic::AtomicU64,
    /// This `Cluster`'s incarnation, told to peers in the handshake.
    incarnation: u64,
    /// Set by `shutdown`: accept nothing, dial nothing.
    closed: std::sync::atomic::AtomicBool,
    stop_accepting: tokio::sync::Notify,
    /// Refused connections, counted per source (bounds the log).
    refusals: Mutex<crate::log_limit::LogLimit>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({} at {})", self.inner.config.name, self.inner.addr)
    }
}

impl Cluster {
    /// Listens and starts accepting peers.
    pub async fn start(node: Node, config: ClusterConfig) -> Result<Self, ClusterError> {
        // Bound where the accept loop runs: a socket belongs to the reactor
        // of the runtime it was made on, which may not outlive the caller.
        let net = node.rt().network().clone();
        let listen = config.listen.clone();
        let bound = node.rt().spawn(async move { net.bind(&listen).await }).await;
        let listener = bound
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("the bind task failed: {e}"))))
            .map_err(|source| ClusterError::Listen { addr: config.listen.clone(), source })?;
        let addr = listener.local_addr().map_err(|source| ClusterError::Listen { addr: config.listen.clone(), source })?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        // Call ids start anywhere (from the node's seeded RNG, so a
        // simulation replays): a late reply to a call of an earlier
        // incarnation is unlikely to share an id, and is refused anyway
        // (it comes on another connection).
        let first_call_id = node.rt().with_rng(|r| r.next_u64());
        // A restarted node must differ from its earlier self even when its
        // RNG has the same seed: the start time goes in (virtual time under
        // simulation, so a run still replays).
        let started = node.rt().system_time().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let incarnation = node.rt().with_rng(|r| r.next_u64()) ^ started.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let inner = Arc::new(Inner {
            config,
            node,
            addr,
            peers: Mutex::new(BTreeMap::new()),
            routes: Default::default(),
            procs: Default::default(),
            rpc: crate::rpc::Rpcs::starting_at(first_call_id),
            events,
            next_conn: Default::default(),
            incarnation,
            closed: Default::default(),
            stop_accepting: tokio::sync::Notify::new(),
            refusals: Mutex::new(crate::log_limit::LogLimit::new(REFUSALS_LOGGED_PER_WINDOW, REFUSAL_WINDOW)),
        });
        if !inner.node.set_distribution(Arc::new(crate::remote::Dist(Arc::downgrade(&inner)))) {
            return Err(ClusterError::AlreadyDistributed { node: inner.config.name.clone() });
        }
        inner.node.rt().spawn(accept_loop(Arc::downgrade(&inner), listener));
        Ok(Self { inner })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The largest frame this node sends or accepts (bytes).
    pub fn frame_limit(&self) -> usize {
        self.inner.config.frame_limit
    }

    /// The address peers reach this node at.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Names of the connected peers, sorted.
    pub fn peers(&self) -> Vec<String> {
        self.inner.peers.lock().iter().filter(|(_, p)| p.conn.is_some()).map(|(n, _)| n.clone()).collect()
    }

    /// How long each connected peer has been silent (nothing heard, not even
    /// a heartbeat, which comes every `tick`): more than a tick or two is a
    /// link in trouble before the watchdog calls the peer down.
    pub fn silences(&self) -> BTreeMap<String, Duration> {
        self.inner.peers.lock().iter().filter_map(|(n, p)| p.conn.as_ref().map(|c| (n.clone(), c.heard.silence()))).collect()
    }

    /// Subscribes to node up/down events from now on.
    #[must_use = "events are delivered only to a receiver that is kept"]
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Connects to the node at `addr` (and, through it, to the rest of the
    /// cluster); returns its name. Clears a previous `disconnect` of it.
    pub async fn connect(&self, addr: &str) -> Result<String, ClusterError> {
        self.connect_expecting(addr, None).await
    }

    /// [`Cluster::connect`] to the node named `name` at `addr`: any other
    /// node there is refused before this one proves anything to it
    /// ([`crate::handshake::HandshakeError::WrongPeer`]). Use this whenever
    /// the peer's name is known (a configured peer list), so that whoever
    /// holds an address cannot pose as another member.
    pub async fn connect_to(&self, name: &str, addr: &str) -> Result<(), ClusterError> {
        self.connect_expecting(addr, Some(name)).await.map(drop)
    }

    async fn connect_expecting(&self, addr: &str, expected: Option<&str>) -> Result<String, ClusterError> {
        // Dialed where the connection's tasks run (see `start`).
        let (inner, owned_addr, expected) = (self.inner.clone(), addr.to_owned(), expected.map(str::to_owned));
        let dialed =
            self.inner.node.rt().spawn(async move { dial(&inner, &owned_addr, DialKind::Connect, expected.as_deref()).await }).await;
        let name = dialed
            .unwrap_or_else(|e| Err(ClusterError::Connect { addr: addr.to_owned(), reason: format!("the dial task failed: {e}") }))?;
        if let Some(p) = self.inner.peers.lock().get_mut(&name) {
            p.manual = false;
        }
        Ok(name)
    }

    /// Drops the connection to `peer` and does not re-dial it until
    /// [`Cluster::connect`]. Returns whether it was connected.
    pub fn disconnect(&self, peer: &str) -> bool {
        link::end(&self.inner, peer, Which::Current, End::Disconnected)
    }

    /// Leaves the cluster: stops listening, drops every connection (peers
    /// see this node go down) and re-dials nothing.
    pub fn shutdown(&self) {
        self.inner.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.stop_accepting.notify_one();
        let names: Vec<String> = self.inner.peers.lock().keys().cloned().collect();
        for name in names {
            link::end(&self.inner, &name, Which::Current, End::Shutdown);
        }
    }

    /// The local node this cluster membership belongs to.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Where this node's spans go, if anywhere ([`ClusterConfig::traces`]).
    pub fn traces(&self) -> Option<&crate::traces::Tracer> {
        self.inner.config.traces.as_ref()
    }

    /// A span of this node in the current trace (see [`crate::traces`]).
    pub(crate) fn span(&self, name: impl FnOnce() -> String, kind: opentelemetry::trace::SpanKind) -> Option<crate::traces::Span> {
        crate::traces::current(&self.inner, name, kind)
    }

    /// A handle that does not keep this membership alive: what a handler the
    /// cluster holds (an RPC handler that calls other nodes) should capture,
    /// so that the two do not keep each other alive.
    pub fn downgrade(&self) -> WeakCluster {
        WeakCluster(Arc::downgrade(&self.inner))
    }
}

/// See [`Cluster::downgrade`].
#[derive(Clone)]
pub struct WeakCluster(std::sync::Weak<Inner>);

impl WeakCluster {
    /// The cluster, if it still exists.
    pub fn upgrade(&self) -> Option<Cluster> {
        self.0.upgrade().map(|inner| Cluster { inner })
    }
}

impl Inner {
    /// The outbox towards the node that owns pids with this name hash.
    pub(crate) fn route(&self, name_hash: u32) -> Option<Arc<Outbox>> {
        self.routes.read().get(&name_hash).cloned()
    }

    /// The outbox towards the peer called `name`.
    pub(crate) fn route_to(&self, name: &str) -> Option<Arc<Outbox>> {
        self.route(NodeId::new(name, 0).name_hash)
    }
}

fn emit(inner: &Inner, event: NodeEvent) {
    tracing::info!(node = %inner.config.name, ?event, "cluster event");
    // No subscriber is fine.
    let _ = inner.events.send(event);
}

/// The node (this one, or a known peer) whose name has the same 32-bit hash
/// as `peer`'s but another name: pids and routes could not tell them apart.
fn hash_taken(me: &str, peers: &BTreeMap<String, Peer>, peer: &str) -> Option<ClusterError> {
    let hash = NodeId::new(peer, 0).name_hash;
    let clash = |name: &str| name != peer && NodeId::new(name, 0).name_hash == hash;
    let taken = if clash(me) { Some(me) } else { peers.keys().map(String::as_str).find(|name| clash(name)) };
    taken.map(|taken| ClusterError::NameCollision { peer: peer.to_owned(), taken: taken.to_owned(), hash })
}

fn known_peers(inner: &Inner) -> Vec<(String, String)> {
    inner.peers.lock().iter().filter(|(_, p)| p.conn.is_some() && !p.addr.is_empty()).map(|(n, p)| (n.clone(), p.addr.clone())).collect()
}

/// Records a peer's address and dials the peers it knows that we do not.
fn learn(inner: &Arc<Inner>, peer: &str, peer_addr: String, known: Vec<(String, String)>) {
    let (to_dial, news) = {
        let mut peers = inner.peers.lock();
        // A peer's address is news for the others when first heard: a node
        // that joined before it was known must still hear of it.
        let news = match peers.get_mut(peer) {
            Some(p) if p.addr != peer_addr => {
                p.addr = peer_addr;
                true
            }
            _ => false,
        };
        let to_dial = known
            .into_iter()
            .filter(|(name, _)| *name != inner.config.name && !peers.get(name).is_some_and(|p| p.conn.is_some() || p.manual))
            .collect::<Vec<(String, String)>>();
        (to_dial, news)
    };
    if news {
        let listing = Wire::Peers { me: inner.addr.clone(), known: known_peers(inner) };
        for (name, p) in inner.peers.lock().iter() {
            if let Some(c) = p.conn.as_ref().filter(|_| name != peer) {
                // A full queue skips this update; the next one carries it.
                let _ = c.outbox.try_push_control(&listing);
            }
        }
    }
    for (name, addr) in to_dial {
        let rt = inner.node.rt().clone();
        let inner = inner.clone();
        rt.spawn(async move {
            if let Err(e) = dial(&inner, &addr, DialKind::Redial, Some(&name)).await {
                tracing::warn!(node = %inner.config.name, %addr, error = %e, "could not join a peer learned from the mesh");
            }
        });
    }
}
