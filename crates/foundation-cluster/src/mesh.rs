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

use foundation::rt::BoxStream;
use foundation::{Node, NodeId};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use tokio::sync::broadcast;

use crate::frame::FRAME_BYTES_DEFAULT;
mod accept;
mod conn;
mod error;

pub use accept::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, HANDSHAKES_MAX, REFUSAL_WINDOW, REFUSALS_LOGGED_PER_WINDOW};
use accept::{accept_loop, dial};

pub use conn::HANDOVER_MAX;
use conn::{Lifecycle, run_conn};
pub use error::ClusterError;

use crate::handshake::{self, DialKind};
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
struct Peer {
    addr: String,
    /// Present while connected.
    conn: Option<Conn>,
    /// Set by `disconnect`: do not re-dial.
    manual: bool,
}

struct Conn {
    id: u64,
    /// The peer's incarnation (from its handshake).
    incarnation: u64,
    /// Frames for the writer task; while held, the writer runs.
    outbox: Outbox,
    /// Dropping this ends the connection's tasks at once; sending on it
    /// hands the connection over to one that replaced it (see `run_conn`).
    stop: tokio::sync::oneshot::Sender<()>,
    /// Resolves when the connection's task has ended (its sender is held by
    /// the task): a replacing connection delivers nothing before that.
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
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
        let net = node.rt().network().clone();
        let listener = net.bind(&config.listen).await.map_err(|source| ClusterError::Listen { addr: config.listen.clone(), source })?;
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
        let name = dial(&self.inner, addr, DialKind::Connect, expected).await?;
        if let Some(p) = self.inner.peers.lock().get_mut(&name) {
            p.manual = false;
        }
        Ok(name)
    }

    /// Drops the connection to `peer` and does not re-dial it until
    /// [`Cluster::connect`]. Returns whether it was connected.
    pub fn disconnect(&self, peer: &str) -> bool {
        let conn = {
            let mut peers = self.inner.peers.lock();
            let Some(p) = peers.get_mut(peer) else { return false };
            p.manual = true;
            p.conn.take()
        };
        match conn {
            Some(c) => {
                drop(c);
                peer_gone(&self.inner, peer, "disconnected".into());
                true
            }
            None => false,
        }
    }

    /// Leaves the cluster: stops listening, drops every connection (peers
    /// see this node go down) and re-dials nothing.
    pub fn shutdown(&self) {
        self.inner.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.stop_accepting.notify_one();
        let conns: Vec<(String, Conn)> =
            self.inner.peers.lock().iter_mut().filter_map(|(name, p)| p.conn.take().map(|c| (name.clone(), c))).collect();
        for (name, conn) in conns {
            drop(conn);
            peer_gone(&self.inner, &name, "this node shut down".into());
        }
    }

    /// The local node this cluster membership belongs to.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
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

/// Cuts the connection to the peer whose pids carry `name_hash` (it is
/// re-dialed as after any loss).
pub(crate) fn cut(inner: &Arc<Inner>, name_hash: u32) {
    let found = {
        let mut peers = inner.peers.lock();
        peers
            .iter_mut()
            .find(|(name, _)| NodeId::new(name, 0).name_hash == name_hash)
            .and_then(|(name, p)| p.conn.take().map(|_| name.clone()))
    };
    if let Some(name) = found {
        connection_lost_taken(inner, &name, "cut: too many control frames waiting".into());
    }
}

/// A peer's connection is gone: forget its route, then tell everyone who
/// depended on it (links, monitors, calls), then emit `Down`.
fn peer_gone(inner: &Arc<Inner>, peer: &str, reason: String) {
    let hash = NodeId::new(peer, 0).name_hash;
    inner.routes.write().remove(&hash);
    crate::remote::peer_down(inner, hash);
    inner.rpc.peer_down(hash, peer);
    emit(inner, NodeEvent::Down { node: peer.to_owned(), reason });
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

/// Installs an authenticated connection, unless the pair already has one
/// that wins the tie-break; refuses a peer whose name hashes like a known
/// node's (checked here, under the peer table's lock, whichever side
/// dialed).
fn established(inner: &Arc<Inner>, peer: handshake::Peer, dialed: Option<String>, stream: BoxStream) -> Result<(), ClusterError> {
    let handshake::Peer { name: peer, incarnation, keys } = peer;
    if peer == inner.config.name {
        tracing::warn!(node = %peer, "refused a connection to itself");
        return Ok(());
    }
    if inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    let we_dialed = dialed.is_some();
    let id = inner.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (outbox, lanes);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let previous;
    let newly_up = {
        let mut peers = inner.peers.lock();
        if let Some(refused) = hash_taken(&inner.config.name, &peers, &peer) {
            tracing::warn!(node = %inner.config.name, error = %refused, "refused a peer");
            return Err(refused);
        }
        let entry =
            peers.entry(peer.clone()).or_insert_with(|| Peer { addr: dialed.clone().unwrap_or_default(), conn: None, manual: false });
        if let Some(a) = &dialed {
            entry.addr.clone_from(a);
        }
        // Tie-break: keep the connection dialed by the smaller name.
        let ours_wins = (inner.config.name < peer) == we_dialed;
        if entry.conn.is_some() && !ours_wins {
            return Ok(());
        }
        // A connection that replaces one to the same incarnation continues
        // its session: replies to calls made on the old one still count.
        let session = entry.conn.as_ref().filter(|c| c.incarnation == incarnation).map_or(id, |c| c.outbox.session());
        (outbox, lanes) = Outbox::new(inner.config.frame_limit, session);
        let old = entry.conn.replace(Conn { id, incarnation, outbox: outbox.clone(), stop: stop_tx, ended: Some(ended_rx) });
        let was_up = old.is_some();
        // The old connection is handed over: it sends what it has queued,
        // closes its side, and delivers what the peer sent on it until the
        // peer closes too (or `HANDOVER_MAX`). The new one waits for it to
        // end before delivering, so frames of the old one are never
        // delivered after frames of the new one.
        previous = old.and_then(|mut c| {
            let _ = c.stop.send(());
            c.ended.take()
        });
        inner.routes.write().insert(NodeId::new(&peer, 0).name_hash, Arc::new(outbox.clone()));
        !was_up
    };
    if !newly_up {
        // Frames in flight on the replaced connection may be lost with it
        // (a handover that timed out): windows open again rather than
        // stay short for good.
        crate::remote::reset_windows(inner, NodeId::new(&peer, 0).name_hash);
    }
    let (read, write) = tokio::io::split(stream);
    let lifecycle = Lifecycle { stop: stop_rx, previous, _ended: ended_tx };
    inner.node.rt().spawn(run_conn(inner.clone(), peer.clone(), (id, outbox.session()), keys, (read, write), lanes, lifecycle));
    // Tell the peer where we listen and whom we know, so it can complete the mesh.
    let _ = outbox.try_push_control(&Wire::Peers { me: inner.addr.clone(), known: known_peers(inner) });
    if newly_up {
        emit(inner, NodeEvent::Up { node: peer });
    }
    Ok(())
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

fn connection_lost(inner: &Arc<Inner>, peer: &str, id: u64, reason: String) {
    {
        let mut peers = inner.peers.lock();
        let Some(p) = peers.get_mut(peer) else { return };
        // A newer connection may have replaced this one already.
        if p.conn.as_ref().is_none_or(|c| c.id != id) {
            return;
        }
        p.conn = None;
    }
    connection_lost_taken(inner, peer, reason);
}

/// The loss of a connection already taken out of the peer table.
fn connection_lost_taken(inner: &Arc<Inner>, peer: &str, reason: String) {
    let redial = {
        let peers = inner.peers.lock();
        let Some(p) = peers.get(peer) else { return };
        (!p.manual && inner.config.name.as_str() < peer && !p.addr.is_empty()).then(|| p.addr.clone())
    };
    peer_gone(inner, peer, reason);
    if let Some(addr) = redial {
        inner.node.rt().spawn(redial_with_backoff(inner.clone(), peer.to_owned(), addr));
    }
}

async fn redial_with_backoff(inner: Arc<Inner>, peer: String, addr: String) {
    let mut delay = inner.config.backoff_min;
    for _ in 0..inner.config.redial_attempts {
        foundation::rt::sleep(delay).await;
        let still_wanted = inner.peers.lock().get(&peer).is_some_and(|p| p.conn.is_none() && !p.manual);
        if !still_wanted || dial(&inner, &addr, DialKind::Redial, Some(&peer)).await.is_ok() {
            return;
        }
        delay = (delay * 2).min(inner.config.backoff_max);
    }
    tracing::warn!(node = %inner.config.name, %peer, %addr, "gave up re-dialing a lost peer");
}
