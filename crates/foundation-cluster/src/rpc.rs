//! Remote procedure calls: named handlers, called from any node with a
//! timeout.
//!
//! - [`Cluster::register_rpc`] installs a handler `Fn(Req) -> Future<Resp>`
//!   under a name (requests and responses are serde types; `Bytes` travels
//!   raw, without serde).
//! - [`Cluster::rpc`] calls it on a node (this one included). Each way a call
//!   can fail is its own [`RpcError`]: a timeout, a panic in the handler, an
//!   unknown handler name, a lost connection, a request or response that does
//!   not decode, too many calls in flight.
//! - A timed-out call may still run on the remote node: its late reply is
//!   dropped.
//! - A reply is bound to its call: call ids start at a random value (from
//!   the node's seeded RNG) for each `Cluster`, and a reply completes a
//!   call only if it comes from the node called, in the session the call
//!   went out in (a restarted caller or callee never takes an old reply);
//!   the server answers in the session the call came in. A session is the
//!   run of connections between two incarnations of the pair: a connection
//!   that replaces another by the tie-break (both dialed at once) continues
//!   it, so a call in flight across the swap still gets its reply if its
//!   frames got through (a test's call timed out here before).
//! - Bounds: [`RPC_PENDING_MAX`] calls waiting for replies per node, and
//!   [`RPC_SERVING_MAX`] calls served per node: a call is admitted (or
//!   refused `Busy`, with a log line) as its frame is read, before a task
//!   exists for it, and counted until its reply is sent.
//! - Timeouts a peer supplies (in a request) are to be clamped by the
//!   handler with [`clamp_peer_timeout`] to [`PEER_TIMEOUT_MAX`]: a peer's
//!   `u64::MAX` ms must not reach `Instant + Duration` (which panics).

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use foundation::NodeId;
use foundation::context::with_global_context;
use opentelemetry::trace::SpanKind;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::mesh::{Cluster, Inner, Wire};
use crate::outbox::PushError;

/// Calls waiting for a reply, per node.
pub const RPC_PENDING_MAX: usize = 65_536;
/// Handlers running at once, per node.
pub const RPC_SERVING_MAX: usize = 4096;

/// The longest timeout a peer may ask a handler to wait (see
/// [`clamp_peer_timeout`]): longer than any client timeout in this
/// repository (the CLI's and the test kit's are seconds).
pub const PEER_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// A timeout that came from a peer, clamped to [`PEER_TIMEOUT_MAX`] (with
/// a log line when it was over).
pub fn clamp_peer_timeout(timeout: Duration) -> Duration {
    if timeout > PEER_TIMEOUT_MAX {
        tracing::warn!(?timeout, max = ?PEER_TIMEOUT_MAX, "a peer's timeout over the maximum: clamped");
    }
    timeout.min(PEER_TIMEOUT_MAX)
}

/// Frames of the RPC protocol. The payload is the request or the response.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum RpcWire {
    Call { id: u64, name: String, ctx: crate::remote::WireContext },
    Reply { id: u64, outcome: Outcome },
}

/// How a call ended on the serving node.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum Outcome {
    Ok,
    Panic(String),
    Unknown,
    BadRequest(String),
    Busy,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No reply within the timeout (the call may still run there).
    #[error("rpc {name} on {node}: no reply within {after:?}")]
    Timeout {
        /// The node called.
        node: String,
        /// The handler.
        name: String,
        /// The timeout.
        after: Duration,
    },
    /// The handler panicked.
    #[error("rpc {name} on {node} panicked: {message}")]
    Panic {
        /// The node called.
        node: String,
        /// The handler.
        name: String,
        /// The panic message.
        message: String,
    },
    /// No handler of that name on that node.
    #[error("no rpc handler named {name} on {node}")]
    UnknownHandler {
        /// The node called.
        node: String,
        /// The name asked for.
        name: String,
    },
    /// The node is not connected: the call was not sent.
    #[error("no connection to node {node}")]
    NoConnection {
        /// The node called.
        node: String,
    },
    /// The connection went down while the call was out: the handler may
    /// have run (its outcome is unknown).
    #[error("the connection to node {node} went down during the call")]
    Lost {
        /// The node called.
        node: String,
    },
    /// The handler could not decode the request (its type differs).
    #[error("rpc {name} on {node} could not decode the request: {message}")]
    BadRequest {
        /// The node called.
        node: String,
        /// The handler.
        name: String,
        /// The decode error.
        message: String,
    },
    /// The response did not decode as the expected type.
    #[error("rpc response does not decode: {0}")]
    BadResponse(String),
    /// Too many calls in flight (here or at the serving node).
    #[error("too many rpc calls in flight on {node}")]
    Busy {
        /// The node that refused.
        node: String,
    },
    /// The request could not be sent (too large, or not encodable).
    #[error("rpc request not sent: {0}")]
    Send(String),
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>>;
type Handler = Arc<dyn Fn(Bytes) -> Result<HandlerFuture, String> + Send + Sync>;

struct Pending {
    /// The name hash of the node called, and the session the call went
    /// out in: a reply counts only from that node in that session.
    peer: u32,
    session: u64,
    reply: oneshot::Sender<Result<Bytes, RpcError>>,
    /// Whether the call's frame was taken by the writer (else it never
    /// left this node).
    sent: Arc<AtomicBool>,
}

impl Pending {
    /// The error for a call whose connection went down.
    fn gone(&self, node: &str) -> RpcError {
        if self.sent.load(Ordering::Acquire) {
            RpcError::Lost { node: node.to_owned() }
        } else {
            RpcError::NoConnection { node: node.to_owned() }
        }
    }
}

/// A node's handlers and calls in flight.
pub(crate) struct Rpcs {
    handlers: RwLock<BTreeMap<String, Handler>>,
    pending: Mutex<BTreeMap<u64, Pending>>,
    next_id: AtomicU64,
    serving: AtomicUsize,
    /// Where calls are timed ([`Cluster::set_telemetry`]).
    telemetry: std::sync::OnceLock<crate::services::Telemetry>,
    /// The names calls were timed under (at most [`RPC_NAMES_TIMED`]).
    timed: Mutex<std::collections::BTreeSet<String>>,
}

/// Distinct call names timed under their own label; calls of further
/// names share the label `other`, so the metric's label set stays bounded
/// whatever names code calls.
pub const RPC_NAMES_TIMED: usize = 64;

impl RpcError {
    /// The error's kind, as a metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Panic { .. } => "panic",
            Self::UnknownHandler { .. } => "unknown_handler",
            Self::NoConnection { .. } => "no_connection",
            Self::Lost { .. } => "lost",
            Self::BadRequest { .. } => "bad_request",
            Self::BadResponse(_) => "bad_response",
            Self::Busy { .. } => "busy",
            Self::Send(_) => "send",
        }
    }
}

impl Rpcs {
    /// Call ids from `first` on (wrapping).
    pub fn starting_at(first: u64) -> Self {
        Self {
            handlers: RwLock::default(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(first),
            serving: AtomicUsize::new(0),
            telemetry: std::sync::OnceLock::new(),
            timed: Mutex::default(),
        }
    }

    /// Fails the calls waiting on a peer that went down.
    pub fn peer_down(&self, name_hash: u32, peer: &str) {
        let failed: Vec<Pending> = {
            let mut pending = self.pending.lock();
            let ids: Vec<u64> = pending.iter().filter(|(_, p)| p.peer == name_hash).map(|(id, _)| *id).collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        for p in failed {
            let e = p.gone(peer);
            let _ = p.reply.send(Err(e));
        }
    }
}

/// A value as a payload: `Bytes` as is, anything else through postcard.
pub(crate) fn to_payload<T: Serialize + 'static>(value: &T) -> Result<Bytes, String> {
    if let Some(b) = (value as &dyn Any).downcast_ref::<Bytes>() {
        return Ok(b.clone());
    }
    postcard::to_stdvec(value).map(Bytes::from).map_err(|e| e.to_string())
}

/// A payload as a value (the inverse of [`to_payload`]).
pub(crate) fn from_payload<T: DeserializeOwned + 'static>(payload: Bytes) -> Result<T, String> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<Bytes>() {
        let any: Box<dyn Any> = Box::new(payload);
        return Ok(*any.downcast::<T>().expect("T is Bytes"));
    }
    postcard::from_bytes(&payload).map_err(|e| format!("does not decode as {}: {e}", std::any::type_name::<T>()))
}

/// Polls a future, turning a panic into an error.
struct CatchPanic<F>(F);

impl<F: Future + Unpin> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(panic_text(payload.as_ref()))),
        }
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// A call counted in [`RPC_SERVING_MAX`] from its admission until its
/// reply is sent (or dropped): the guard's drop ends the count.
struct Admitted<I: std::ops::Deref<Target = Inner>>(I);

impl<I: std::ops::Deref<Target = Inner>> Admitted<I> {
    /// Admits a call, or `None` when [`RPC_SERVING_MAX`] are being served.
    fn new(inner: I) -> Option<Self> {
        if inner.rpc.serving.fetch_add(1, Ordering::AcqRel) >= RPC_SERVING_MAX {
            inner.rpc.serving.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(inner))
    }
}

impl<I: std::ops::Deref<Target = Inner>> Drop for Admitted<I> {
    fn drop(&mut self) {
        let before = self.0.rpc.serving.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "an admitted call was counted");
    }
}

/// Runs the handler `name` on `payload` (on this node), if admitted.
async fn serve(inner: &Inner, name: &str, payload: Bytes) -> (Outcome, Bytes) {
    let Some(_admitted) = Admitted::new(inner) else { return (Outcome::Busy, Bytes::new()) };
    serve_admitted(inner, name, payload).await
}

/// Runs the handler `name` on `payload` for a call already admitted.
async fn serve_admitted(inner: &Inner, name: &str, payload: Bytes) -> (Outcome, Bytes) {
    let handler = inner.rpc.handlers.read().get(name).cloned();
    let Some(handler) = handler else { return (Outcome::Unknown, Bytes::new()) };
    match handler(payload) {
        Err(e) => (Outcome::BadRequest(e), Bytes::new()),
        Ok(fut) => match CatchPanic(fut).await {
            Ok(Ok(resp)) => (Outcome::Ok, resp),
            Ok(Err(e)) => (Outcome::Panic(format!("response does not encode: {e}")), Bytes::new()),
            Err(message) => (Outcome::Panic(message), Bytes::new()),
        },
    }
}

/// A frame arrived from `peer` in session `session`. A call is served in
/// its own task and answered in the same session (if it is gone, so is
/// the caller's wait: the call is `Lost` there). A reply completes its call
/// only if it comes from the node called, in the session the call went
/// out on; any other is dropped (and logged).
pub(crate) fn on_frame(inner: &Arc<Inner>, peer: &str, session: u64, wire: RpcWire, payload: Bytes) {
    match wire {
        RpcWire::Call { id, name, ctx } => {
            // Admitted (or refused) here, before a task exists for it.
            let Some(admitted) = Admitted::new(inner.clone()) else {
                tracing::warn!(node = %inner.config.name, %peer, %name, id, "rpc refused: {RPC_SERVING_MAX} calls being served (Busy)");
                let busy = crate::outbox::Out::header(&Wire::Rpc(RpcWire::Reply { id, outcome: Outcome::Busy })).control();
                // A full queue drops the refusal: the caller times out.
                if let Some(outbox) = inner.route_to(peer).filter(|o| o.session() == session) {
                    let _ = outbox.try_send(busy);
                }
                return;
            };
            let ctx = crate::remote::read_context(inner, peer, ctx);
            let rt = inner.node.rt().clone();
            let inner = inner.clone();
            let peer = peer.to_owned();
            rt.spawn(async move {
                // Counted until the reply is sent (the guard drops last).
                let _admitted = admitted;
                // The handler runs in the caller's context, inside its span.
                let (outcome, resp) = match ctx {
                    Some(ctx) => {
                        let mut served = crate::traces::under(&inner, &ctx, || format!("rpc {name}"), SpanKind::Server);
                        let ctx = served.as_ref().map_or(ctx, |s| s.context().clone());
                        let span = ctx.span("rpc");
                        let answer = with_global_context(ctx, serve_admitted(&inner, &name, payload)).instrument(span).await;
                        if let Some(served) = &mut served {
                            served.set("rpc.method", name.clone());
                            served.set("client.address", peer.clone());
                            if !matches!(answer.0, Outcome::Ok) {
                                served.fail(format!("{:?}", answer.0));
                            }
                        }
                        answer
                    }
                    None => serve_admitted(&inner, &name, payload).await,
                };
                let Some(outbox) = inner.route_to(&peer).filter(|o| o.session() == session) else {
                    tracing::debug!(node = %inner.config.name, %peer, id, "rpc reply dropped: the call's connection is gone");
                    return;
                };
                let header = Wire::Rpc(RpcWire::Reply { id, outcome });
                let out = match outbox.encode(&header, None::<&()>, resp) {
                    Ok(out) => out,
                    Err(e) => {
                        let failed = Wire::Rpc(RpcWire::Reply { id, outcome: Outcome::Panic(format!("response not sent: {e}")) });
                        crate::outbox::Out::header(&failed)
                    }
                };
                let _ = outbox.send(out.control()).await;
            });
        }
        RpcWire::Reply { id, outcome } => {
            let pending = {
                let mut pending = inner.rpc.pending.lock();
                match pending.get(&id) {
                    Some(p) if p.peer == NodeId::new(peer, 0).name_hash && p.session == session => pending.remove(&id),
                    Some(_) => {
                        drop(pending);
                        tracing::warn!(node = %inner.config.name, %peer, session, id, "rpc reply from another node or session than its call's: dropped");
                        None
                    }
                    None => None,
                }
            };
            let Some(pending) = pending else { return };
            let result = match outcome {
                Outcome::Ok => Ok(payload),
                other => Err(outcome_error(other, peer, "")),
            };
            let _ = pending.reply.send(result);
        }
    }
}

fn outcome_error(outcome: Outcome, node: &str, name: &str) -> RpcError {
    let (node, name) = (node.to_owned(), name.to_owned());
    match outcome {
        Outcome::Ok => unreachable!("not an error"),
        Outcome::Panic(message) => RpcError::Panic { node, name, message },
        Outcome::Unknown => RpcError::UnknownHandler { node, name },
        Outcome::BadRequest(message) => RpcError::BadRequest { node, name, message },
        Outcome::Busy => RpcError::Busy { node },
    }
}

/// Fills in the handler name an error from the wire does not carry.
fn named(e: RpcError, call: &str) -> RpcError {
    match e {
        RpcError::Panic { node, message, .. } => RpcError::Panic { node, name: call.into(), message },
        RpcError::UnknownHandler { node, .. } => RpcError::UnknownHandler { node, name: call.into() },
        RpcError::BadRequest { node, message, .. } => RpcError::BadRequest { node, name: call.into(), message },
        other => other,
    }
}

impl Cluster {
    /// Registers (or replaces) the handler `name` on this node. A handler
    /// that calls other nodes should capture a [`Cluster::downgrade`]d
    /// handle, not a `Cluster` (which would keep itself alive).
    pub fn register_rpc<Req, Resp, F, Fut>(&self, name: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |payload: Bytes| {
            let req = from_payload::<Req>(payload)?;
            let fut = handler(req);
            Ok(Box::pin(async move { to_payload(&fut.await) }) as HandlerFuture)
        });
        self.inner().rpc.handlers.write().insert(name.to_owned(), handler);
    }

    /// Removes the handler `name`; returns whether there was one.
    pub fn unregister_rpc(&self, name: &str) -> bool {
        self.inner().rpc.handlers.write().remove(name).is_some()
    }

    /// Times this node's calls from now on: the histogram
    /// `foundation_rpc_seconds{name, outcome}` (`ok` or the error's
    /// [`RpcError::kind`]) in `telemetry`'s recorder. Once: `false` if the
    /// calls are timed already.
    pub fn set_telemetry(&self, telemetry: crate::services::Telemetry) -> bool {
        self.inner().rpc.telemetry.set(telemetry).is_ok()
    }

    /// Calls the handler `name` on `node` with `request`, waiting at most
    /// `timeout` for the reply.
    pub async fn rpc<Req, Resp>(&self, node: &str, name: &str, request: Req, timeout: Duration) -> Result<Resp, RpcError>
    where
        Req: Serialize + 'static,
        Resp: DeserializeOwned + 'static,
    {
        let Some(mut span) = self.span(|| format!("rpc {name}"), SpanKind::Client) else {
            return self.rpc_timed(node, name, request, timeout).await;
        };
        span.set("rpc.method", name.to_owned());
        span.set("server.address", node.to_owned());
        let result = with_global_context(span.context().clone(), self.rpc_timed(node, name, request, timeout)).await;
        span.outcome(&result);
        result
    }

    async fn rpc_timed<Req, Resp>(&self, node: &str, name: &str, request: Req, timeout: Duration) -> Result<Resp, RpcError>
    where
        Req: Serialize + 'static,
        Resp: DeserializeOwned + 'static,
    {
        let rpcs = &self.inner().rpc;
        let Some(telemetry) = rpcs.telemetry.get() else { return self.call(node, name, request, timeout).await };
        let start = foundation::rt::Instant::now();
        let result = self.call(node, name, request, timeout).await;
        let secs = start.elapsed().as_secs_f64();
        let label = {
            let mut timed = rpcs.timed.lock();
            if timed.contains(name) || (timed.len() < RPC_NAMES_TIMED && timed.insert(name.to_owned())) {
                name.to_owned()
            } else {
                "other".to_owned()
            }
        };
        let outcome = result.as_ref().map_or_else(RpcError::kind, |_| "ok");
        telemetry.record(|| metrics::histogram!("foundation_rpc_seconds", "name" => label, "outcome" => outcome).record(secs));
        result
    }

    async fn call<Req, Resp>(&self, node: &str, name: &str, request: Req, timeout: Duration) -> Result<Resp, RpcError>
    where
        Req: Serialize + 'static,
        Resp: DeserializeOwned + 'static,
    {
        let inner = self.inner();
        let payload = to_payload(&request).map_err(RpcError::Send)?;
        let reply = if node == inner.config.name {
            let local = async {
                match serve(inner, name, payload).await {
                    (Outcome::Ok, resp) => Ok(resp),
                    (other, _) => Err(outcome_error(other, node, name)),
                }
            };
            foundation::rt::timeout(timeout, local).await
        } else {
            let outbox = inner.route_to(node).ok_or_else(|| RpcError::NoConnection { node: node.to_owned() })?;
            let id = inner.rpc.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            let sent = Arc::new(AtomicBool::new(false));
            {
                let mut pending = inner.rpc.pending.lock();
                if pending.len() >= RPC_PENDING_MAX {
                    return Err(RpcError::Busy { node: inner.config.name.clone() });
                }
                pending
                    .insert(id, Pending { peer: NodeId::new(node, 0).name_hash, session: outbox.session(), reply: tx, sent: sent.clone() });
            }
            // Taken out again however the call ends, so the map stays bounded.
            let _forget = Forget { inner, id };
            let header = Wire::Rpc(RpcWire::Call { id, name: name.to_owned(), ctx: crate::remote::wire_context() });
            let mut out = outbox.encode(&header, None::<&()>, payload).map_err(|e| RpcError::Send(e.to_string()))?.control();
            out.track(sent.clone());
            let call = async {
                outbox.send(out).await.map_err(|e| match e {
                    PushError::Closed => RpcError::NoConnection { node: node.to_owned() },
                    e => RpcError::Send(e.to_string()),
                })?;
                rx.await.unwrap_or_else(|_| {
                    Err(if sent.load(Ordering::Acquire) {
                        RpcError::Lost { node: node.to_owned() }
                    } else {
                        RpcError::NoConnection { node: node.to_owned() }
                    })
                })
            };
            foundation::rt::timeout(timeout, call).await
        };
        let resp = reply
            .map_err(|_| RpcError::Timeout { node: node.to_owned(), name: name.to_owned(), after: timeout })?
            .map_err(|e| named(e, name))?;
        from_payload(resp).map_err(RpcError::BadResponse)
    }
}

struct Forget<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.inner.rpc.pending.lock().remove(&self.id);
    }
}
