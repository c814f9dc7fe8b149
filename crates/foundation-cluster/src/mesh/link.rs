//! How a connection to a peer starts and ends: the one place that changes
//! a peer's link.
//!
//! ```text
//!                 established (handshake done)
//!   Down ───────────────────────────────────────▶ Up(conn)
//!    ▲  ▲                                          │  │
//!    │  └──────────── end(Lost | Cut) ─────────────┘  │ established again
//!    │                (re-dialed by the node          │ (the tie-break's
//!    │                 whose name sorts first)        │  winner): Replaced,
//!    │                                                ▼  handed over, no Down
//!    └── end(Shutdown) ─────────────────────── Up(new conn)
//!
//!   Disconnected ◀── end(Disconnected) from Up or Down: nothing re-dials,
//!                    the peer's re-dials are refused (accept.rs), until a
//!                    `connect` from either side (back to Down, then Up).
//! ```
//!
//! - **Start**: [`established`] installs an authenticated connection, or
//!   refuses it (a name that hashes like a known node's; the pair already
//!   has the connection the tie-break keeps; this node shut down).
//! - **End**: every other way a connection stops goes through [`end`] with
//!   its [`End`]: the connection's task ended ([`End::Lost`]), its control
//!   frames overflowed ([`End::Cut`]), `disconnect` ([`End::Disconnected`]),
//!   `shutdown` ([`End::Shutdown`]). [`end`] takes the connection out of the
//!   table, tells those that depended on it (routes, links and monitors,
//!   RPC calls), emits `Down`, and re-dials when the reason and the names
//!   say so.
//! - **Replaced** is the one transition without a `Down`: the replaced
//!   connection is handed over (it sends what it queued and delivers what
//!   it receives until the peer closes it, `conn.rs`), and the replacing one
//!   delivers nothing before the replaced one's task ended.

use std::sync::Arc;

use foundation::NodeId;
use foundation::rt::BoxStream;

use super::conn::{Heard, Lifecycle, run_conn};
use super::{ClusterError, Inner, NodeEvent, Wire, emit, hash_taken, known_peers};
use crate::handshake;
use crate::outbox::Outbox;

/// What this node knows of a peer.
pub(super) struct Peer {
    pub(super) addr: String,
    /// Up while present.
    pub(super) conn: Option<Conn>,
    /// Disconnected (by `disconnect`): nothing re-dials it.
    pub(super) manual: bool,
}

pub(super) struct Conn {
    pub(super) id: u64,
    /// The peer's incarnation (from its handshake).
    pub(super) incarnation: u64,
    /// Frames for the writer task; while held, the writer runs.
    pub(super) outbox: Outbox,
    /// Dropping this ends the connection's tasks at once; sending on it
    /// hands the connection over to one that replaced it (see `run_conn`).
    pub(super) stop: tokio::sync::oneshot::Sender<()>,
    /// Resolves when the connection's task has ended (its sender is held by
    /// the task): a replacing connection delivers nothing before that.
    pub(super) ended: Option<tokio::sync::oneshot::Receiver<()>>,
    /// When the peer was last heard on this connection.
    pub(super) heard: Arc<Heard>,
}

/// Installs an authenticated connection, unless the pair already has one
/// that wins the tie-break; refuses a peer whose name hashes like a known
/// node's (checked here, under the peer table's lock, whichever side
/// dialed).
pub(super) fn established(
    inner: &Arc<Inner>,
    peer: handshake::Peer,
    dialed: Option<String>,
    stream: BoxStream,
) -> Result<(), ClusterError> {
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
    let heard = Arc::new(Heard::new());
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
        let old = entry.conn.replace(Conn {
            id,
            incarnation,
            outbox: outbox.clone(),
            stop: stop_tx,
            ended: Some(ended_rx),
            heard: heard.clone(),
        });
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
    let lifecycle = Lifecycle { stop: stop_rx, previous, _ended: ended_tx, heard };
    inner.node.rt().spawn(run_conn(inner.clone(), peer.clone(), (id, outbox.session()), keys, (read, write), lanes, lifecycle));
    // Tell the peer where we listen and whom we know, so it can complete the mesh.
    let _ = outbox.try_push_control(&Wire::Peers { me: inner.addr.clone(), known: known_peers(inner) });
    if newly_up {
        emit(inner, NodeEvent::Up { node: peer });
    }
    Ok(())
}

/// Why a connection ends.
#[derive(Debug)]
pub(crate) enum End {
    /// Its task ended: the peer closed, an I/O or protocol error, silence.
    Lost(String),
    /// Too many control frames waited for room (`remote.rs`).
    Cut,
    /// [`super::Cluster::disconnect`].
    Disconnected,
    /// [`super::Cluster::shutdown`].
    Shutdown,
}

impl End {
    /// The reason a `Down` event gives.
    fn reason(self) -> String {
        match self {
            End::Lost(reason) => reason,
            End::Cut => "cut: too many control frames waiting".into(),
            End::Disconnected => "disconnected".into(),
            End::Shutdown => "this node shut down".into(),
        }
    }

    /// Whether the peer is dialed again (by the node whose name sorts
    /// first, so the two do not both dial).
    fn redials(&self) -> bool {
        matches!(self, End::Lost(_) | End::Cut)
    }
}

/// Which connection [`end`] ends.
#[derive(Clone, Copy, Debug)]
pub(super) enum Which {
    /// This one only: a connection that was replaced already ends quietly.
    Id(u64),
    /// Whichever is up.
    Current,
}

/// Ends `peer`'s connection for `why` (see the module docs); returns
/// whether one was up. [`End::Disconnected`] marks the peer disconnected
/// even when it was down.
pub(super) fn end(inner: &Arc<Inner>, peer: &str, which: Which, why: End) -> bool {
    let (conn, redial) = {
        let mut peers = inner.peers.lock();
        let Some(p) = peers.get_mut(peer) else { return false };
        if matches!(why, End::Disconnected) {
            p.manual = true;
        }
        let current = match (which, &p.conn) {
            (Which::Id(id), Some(c)) => c.id == id,
            (Which::Current, Some(_)) => true,
            (_, None) => false,
        };
        if !current {
            return false;
        }
        let redial = why.redials() && !p.manual && inner.config.name.as_str() < peer && !p.addr.is_empty();
        (p.conn.take(), redial.then(|| p.addr.clone()))
    };
    // Dropping the connection's stop sender ends its tasks.
    drop(conn);
    down(inner, peer, why.reason());
    if let Some(addr) = redial {
        inner.node.rt().spawn(redial_with_backoff(inner.clone(), peer.to_owned(), addr));
    }
    true
}

/// Ends the connection to the peer whose pids carry `name_hash`
/// ([`End::Cut`]).
pub(crate) fn cut(inner: &Arc<Inner>, name_hash: u32) {
    let name = inner.peers.lock().keys().find(|name| NodeId::new(name, 0).name_hash == name_hash).cloned();
    if let Some(name) = name {
        end(inner, &name, Which::Current, End::Cut);
    }
}

/// A peer's connection is gone: forget its route, then tell everyone who
/// depended on it (links, monitors, calls), then emit `Down`.
fn down(inner: &Arc<Inner>, peer: &str, reason: String) {
    let hash = NodeId::new(peer, 0).name_hash;
    inner.routes.write().remove(&hash);
    crate::remote::peer_down(inner, hash);
    inner.rpc.peer_down(hash, peer);
    emit(inner, NodeEvent::Down { node: peer.to_owned(), reason });
}

async fn redial_with_backoff(inner: Arc<Inner>, peer: String, addr: String) {
    let mut delay = inner.config.backoff_min;
    for _ in 0..inner.config.redial_attempts {
        foundation::rt::sleep(delay).await;
        let still_wanted = inner.peers.lock().get(&peer).is_some_and(|p| p.conn.is_none() && !p.manual);
        if !still_wanted || super::dial(&inner, &addr, handshake::DialKind::Redial, Some(&peer)).await.is_ok() {
            return;
        }
        delay = (delay * 2).min(inner.config.backoff_max);
    }
    tracing::warn!(node = %inner.config.name, %peer, %addr, "gave up re-dialing a lost peer");
}
