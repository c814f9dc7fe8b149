//! A network seam with faults: real TCP underneath, and a shared table of
//! partitions, clogs, pauses, latency and loss on top, for nodes that run
//! in one process.
//!
//! Every node of an in-process cluster (and its client) gets a
//! [`FaultyNetwork`] over one [`Faults`] table, which knows each node's
//! listen address. The side that dials wraps its stream, and the wrapper
//! judges both directions of that connection: a direction that is
//! partitioned, clogged or touches a paused node *stalls* (reads and writes
//! wait, as segments a partition drops would never arrive), and flows again
//! when the table changes. A dial across a partition is refused. Latency
//! delays each write; loss breaks a connection (a write fails with
//! `ConnectionReset`), as on turmoil, whose TCP does not retransmit. A
//! throttle paces each direction: a read or write moves at most 20 ms of
//! the link's bytes, and the next waits until the link could have carried
//! them.
//!
//! Accepted streams are not wrapped: in one process, the dialer's wrapper
//! already governs both directions of the connection.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use foundation::rt::net::{BoxFuture, BoxStream, Listener, Network, TokioNetwork};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Fault, separated_pairs};

/// The fault table of one in-process cluster. Node indexes are 0-based;
/// `None` is a party that is not a node (the test's client), which only
/// pauses affect.
pub struct Faults {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    nodes: BTreeMap<String, usize>,
    /// Directed: traffic from `.0` to `.1` is dropped.
    blocked: BTreeSet<(usize, usize)>,
    /// Undirected (stored with `.0 < .1`): held until unclogged.
    clogged: BTreeSet<(usize, usize)>,
    paused: BTreeSet<usize>,
    /// Undirected: added latency per write and chance a write breaks.
    links: BTreeMap<(usize, usize), (Duration, f64)>,
    /// Undirected: bytes a second each way.
    throttled: BTreeMap<(usize, usize), u64>,
    /// Tasks waiting for the table to change.
    wakers: Vec<Waker>,
    rng: Option<SmallRng>,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Table {
    fn stalled(&self, from: Option<usize>, to: Option<usize>) -> bool {
        if from.is_some_and(|n| self.paused.contains(&n)) || to.is_some_and(|n| self.paused.contains(&n)) {
            return true;
        }
        match (from, to) {
            (Some(a), Some(b)) => self.blocked.contains(&(a, b)) || self.clogged.contains(&pair(a, b)),
            _ => false,
        }
    }

    fn wake_all(&mut self) {
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }
}

/// The faults of a table, without its addresses: what a test sends to the
/// agent of every node that runs as its own OS process, so that each
/// process judges its own dials by the same table.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaultTable {
    /// Directed blocks.
    pub blocked: Vec<(usize, usize)>,
    /// Clogged pairs.
    pub clogged: Vec<(usize, usize)>,
    /// Paused nodes.
    pub paused: Vec<usize>,
    /// Links: `((a, b), (latency_ms, loss))`.
    pub links: Vec<((usize, usize), (u64, f64))>,
    /// Throttled pairs: `((a, b), bytes_per_sec)`.
    #[serde(default)]
    pub throttled: Vec<((usize, usize), u64)>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.table.lock();
        f.debug_struct("Faults").field("blocked", &t.blocked).field("clogged", &t.clogged).field("paused", &t.paused).finish()
    }
}

impl Faults {
    /// An empty table; `seed` drives the loss draws.
    pub fn new(seed: u64) -> Self {
        Self { table: Mutex::new(Table { rng: Some(SmallRng::seed_from_u64(seed)), ..Table::default() }) }
    }

    fn change(&self, f: impl FnOnce(&mut Table)) {
        let mut t = self.table.lock();
        f(&mut t);
        t.wake_all();
    }

    /// Node `index` listens on `addr`.
    pub fn register(&self, addr: &str, index: usize) {
        self.change(|t| {
            t.nodes.insert(addr.to_owned(), index);
        });
    }

    /// Drops traffic from `from` to `to`.
    pub fn block(&self, from: usize, to: usize) {
        self.change(|t| {
            t.blocked.insert((from, to));
        });
    }

    /// Holds traffic between `a` and `b` until [`Faults::unclog`].
    pub fn clog(&self, a: usize, b: usize) {
        self.change(|t| {
            t.clogged.insert(pair(a, b));
        });
    }

    /// Releases a clog.
    pub fn unclog(&self, a: usize, b: usize) {
        self.change(|t| {
            t.clogged.remove(&pair(a, b));
        });
    }

    /// Freezes (`true`) or releases a node's traffic.
    pub fn set_paused(&self, node: usize, paused: bool) {
        self.change(|t| {
            if paused {
                t.paused.insert(node);
            } else {
                t.paused.remove(&node);
            }
        });
    }

    /// Latency and loss on the link between `a` and `b`.
    pub fn set_link(&self, a: usize, b: usize, latency: Duration, loss: f64) {
        self.change(|t| {
            t.links.insert(pair(a, b), (latency, loss));
        });
    }

    /// Caps the bandwidth between `a` and `b` (0: no cap).
    pub fn throttle(&self, a: usize, b: usize, bytes_per_sec: u64) {
        self.change(|t| {
            if bytes_per_sec == 0 {
                t.throttled.remove(&pair(a, b));
            } else {
                t.throttled.insert(pair(a, b), bytes_per_sec);
            }
        });
    }

    /// Repairs partitions, clogs, links and throttles (pauses stay).
    pub fn heal(&self) {
        self.change(|t| {
            t.blocked.clear();
            t.clogged.clear();
            t.links.clear();
            t.throttled.clear();
        });
    }

    /// The faults now (addresses aside).
    pub fn snapshot(&self) -> FaultTable {
        let t = self.table.lock();
        FaultTable {
            blocked: t.blocked.iter().copied().collect(),
            clogged: t.clogged.iter().copied().collect(),
            paused: t.paused.iter().copied().collect(),
            links: t.links.iter().map(|(k, (l, p))| (*k, (l.as_millis() as u64, *p))).collect(),
            throttled: t.throttled.iter().map(|(k, r)| (*k, *r)).collect(),
        }
    }

    /// Replaces the faults with `table` (addresses stay).
    pub fn replace(&self, table: &FaultTable) {
        self.change(|t| {
            t.blocked = table.blocked.iter().copied().collect();
            t.clogged = table.clogged.iter().map(|(a, b)| pair(*a, *b)).collect();
            t.paused = table.paused.iter().copied().collect();
            t.links = table.links.iter().map(|((a, b), (l, p))| (pair(*a, *b), (Duration::from_millis(*l), *p))).collect();
            t.throttled = table.throttled.iter().filter(|(_, r)| *r > 0).map(|((a, b), r)| (pair(*a, *b), *r)).collect();
        });
    }

    /// Applies a network fault of a cluster of `n` nodes to the table;
    /// `false` for a fault that is not about the network (kill, restart,
    /// pause, resume: each backend does those its own way).
    pub fn apply(&self, n: usize, fault: &Fault) -> bool {
        match fault {
            Fault::Partition { groups } => {
                for (a, b) in separated_pairs(n, groups) {
                    self.block(a, b);
                    self.block(b, a);
                }
            }
            Fault::Cut { pairs } => {
                for &(a, b) in pairs {
                    self.block(a, b);
                    self.block(b, a);
                }
            }
            Fault::PartitionOneway { from, to } => {
                for &a in from {
                    for &b in to.iter().filter(|b| **b != a) {
                        self.block(a, b);
                    }
                }
            }
            Fault::Heal => self.heal(),
            Fault::Clog { a, b } => self.clog(*a, *b),
            Fault::Unclog { a, b } => self.unclog(*a, *b),
            Fault::SetLink { a, b, latency_ms, loss } => self.set_link(*a, *b, Duration::from_millis(*latency_ms), *loss),
            Fault::Throttle { a, b, bytes_per_sec } => self.throttle(*a, *b, *bytes_per_sec),
            Fault::Kill { .. }
            | Fault::Restart { .. }
            | Fault::Pause { .. }
            | Fault::Resume { .. }
            | Fault::ClockSkew { .. }
            | Fault::DiskError { .. }
            | Fault::DiskLatency { .. }
            | Fault::WipeDisk { .. }
            | Fault::TruncateLog { .. } => return false,
        }
        true
    }

    fn node_of(&self, addr: &str) -> Option<usize> {
        self.table.lock().nodes.get(addr).copied()
    }
}

/// A node's network: tokio's, under the cluster's [`Faults`].
#[derive(Clone, Debug)]
pub struct FaultyNetwork {
    me: Option<usize>,
    faults: Arc<Faults>,
}

impl FaultyNetwork {
    /// The network of node `me` (`None`: not a node, e.g. the client).
    pub fn new(me: Option<usize>, faults: Arc<Faults>) -> Self {
        Self { me, faults }
    }
}

impl Network for FaultyNetwork {
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        TokioNetwork.bind(addr)
    }

    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let to = self.faults.node_of(addr);
            let refused = {
                let t = self.faults.table.lock();
                match (self.me, to) {
                    (Some(a), Some(b)) => t.blocked.contains(&(a, b)) || t.blocked.contains(&(b, a)),
                    _ => false,
                }
            };
            if refused {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("{addr}: partitioned (test fault)")));
            }
            let inner = TokioNetwork.connect(addr).await?;
            Ok(Box::new(FaultyStream { inner, me: self.me, peer: to, faults: self.faults.clone(), delay: None, paced: [None, None] })
                as BoxStream)
        })
    }
}

struct FaultyStream {
    inner: BoxStream,
    me: Option<usize>,
    peer: Option<usize>,
    faults: Arc<Faults>,
    /// The latency of the write in progress.
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Under a throttle, when reads (`[0]`) and writes (`[1]`) may go on.
    paced: [Option<Pin<Box<tokio::time::Sleep>>>; 2],
}

/// The share of a throttled link's second that one read or write moves.
const PACE_SLICE: u64 = 50;

impl FaultyStream {
    /// Whether `from → to` is stalled now; if so, wakes `cx` at the next change.
    fn stalled(&self, from: Option<usize>, to: Option<usize>, cx: &Context<'_>) -> bool {
        let mut t = self.faults.table.lock();
        if !t.stalled(from, to) {
            return false;
        }
        if !t.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            t.wakers.push(cx.waker().clone());
        }
        true
    }

    /// Under a throttle, how many of `want` bytes direction `dir` may move
    /// now (`None`: it must wait, and `cx` is woken when it may).
    fn pace(&mut self, dir: usize, want: usize, cx: &mut Context<'_>) -> Option<usize> {
        if let Some(wait) = self.paced[dir].as_mut() {
            if wait.as_mut().poll(cx).is_pending() {
                return None;
            }
            self.paced[dir] = None;
        }
        match self.rate() {
            Some(rate) => Some(want.min((rate / PACE_SLICE).max(1024) as usize)),
            None => Some(want),
        }
    }

    /// After `dir` moved `n` bytes under a throttle: the next waits until
    /// the link could have carried them.
    fn paced(&mut self, dir: usize, n: usize) {
        if let Some(rate) = self.rate().filter(|_| n > 0) {
            let wait = Duration::from_secs_f64(n as f64 / rate as f64);
            self.paced[dir] = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }

    /// The link's cap in bytes a second, if it is throttled.
    fn rate(&self) -> Option<u64> {
        let (Some(a), Some(b)) = (self.me, self.peer) else { return None };
        self.faults.table.lock().throttled.get(&pair(a, b)).copied()
    }

    /// The link's latency, and whether this write breaks the connection.
    fn link(&self) -> (Duration, bool) {
        let (Some(a), Some(b)) = (self.me, self.peer) else { return (Duration::ZERO, false) };
        let mut t = self.faults.table.lock();
        let Some(&(latency, loss)) = t.links.get(&pair(a, b)) else { return (Duration::ZERO, false) };
        let broken = loss > 0.0 && t.rng.as_mut().is_some_and(|r| r.random_bool(loss.min(1.0)));
        (latency, broken)
    }
}

impl AsyncRead for FaultyStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.stalled(self.peer, self.me, cx) {
            return Poll::Pending;
        }
        let Some(allowed) = self.pace(0, buf.remaining(), cx) else { return Poll::Pending };
        if allowed < buf.remaining() {
            let mut part = vec![0; allowed];
            let mut part = ReadBuf::new(&mut part);
            let read = Pin::new(&mut self.inner).poll_read(cx, &mut part);
            buf.put_slice(part.filled());
            if matches!(read, Poll::Ready(Ok(()))) {
                let n = part.filled().len();
                self.paced(0, n);
            }
            return read;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) {
            self.paced(0, buf.filled().len() - before);
        }
        read
    }
}

impl AsyncWrite for FaultyStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.stalled(self.me, self.peer, cx) {
            return Poll::Pending;
        }
        let Some(allowed) = self.pace(1, data.len(), cx) else { return Poll::Pending };
        let written = self.write_after_latency(cx, &data[..allowed]);
        if let Poll::Ready(Ok(n)) = written {
            self.paced(1, n);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl FaultyStream {
    /// A write, after the link's latency.
    fn write_after_latency(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.delay.is_none() {
            let (latency, broken) = self.link();
            if broken {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "link loss (test fault)")));
            }
            if latency.is_zero() {
                return Pin::new(&mut self.inner).poll_write(cx, data);
            }
            self.delay = Some(Box::pin(tokio::time::sleep(latency)));
        }
        if self.delay.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_pending()) {
            return Poll::Pending;
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        if written.is_ready() {
            self.delay = None;
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(faults: &Arc<Faults>, index: usize) -> String {
        let listener = FaultyNetwork::new(Some(index), faults.clone()).bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        faults.register(&addr, index);
        foundation::rt::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                foundation::rt::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut BoxStream) -> bool {
        let trip = async {
            s.write_all(b"ping").await.expect("write");
            let mut back = [0u8; 4];
            s.read_exact(&mut back).await.expect("read");
        };
        tokio::time::timeout(Duration::from_millis(200), trip).await.is_ok()
    }

    #[tokio::test]
    async fn partitions_refuse_dials_and_stall_streams_until_healed() {
        let faults = Arc::new(Faults::new(1));
        let addr = echo_server(&faults, 1).await;
        let net = FaultyNetwork::new(Some(0), faults.clone());
        let mut s = net.connect(&addr).await.expect("connects");
        assert!(round_trip(&mut s).await);
        faults.block(0, 1);
        assert!(!round_trip(&mut s).await, "a partitioned stream stalls");
        assert_eq!(net.connect(&addr).await.err().map(|e| e.kind()), Some(io::ErrorKind::ConnectionRefused));
        faults.heal();
        assert!(round_trip(&mut s).await, "the stream flows again after the heal");
    }

    #[tokio::test]
    async fn a_paused_node_stalls_even_the_client_and_loss_breaks_connections() {
        let faults = Arc::new(Faults::new(1));
        let addr = echo_server(&faults, 1).await;
        let mut client = FaultyNetwork::new(None, faults.clone()).connect(&addr).await.expect("connects");
        faults.set_paused(1, true);
        assert!(!round_trip(&mut client).await);
        faults.set_paused(1, false);
        let mut s = FaultyNetwork::new(Some(0), faults.clone()).connect(&addr).await.expect("connects");
        faults.set_link(0, 1, Duration::from_millis(1), 1.0);
        assert_eq!(s.write_all(b"x").await.err().map(|e| e.kind()), Some(io::ErrorKind::ConnectionReset));
    }
}
