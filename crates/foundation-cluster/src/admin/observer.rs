//! The live observer: a page at `GET /ui` (its HTML, CSS and script
//! embedded in the binary: it works with no network), fed by one event
//! stream, `GET /ui/events` (server-sent events, a view every [`UI_TICK`]),
//! and the process endpoints an operator drives it with.
//!
//! | endpoint | what it does |
//! |---|---|
//! | `GET /ui` | the page (without a session: its login form, 401) |
//! | `POST /ui/login` | `token=TOKEN` (a form): sets the session cookie, then back to `/ui` |
//! | `GET /ui/events` | `view` events: the cluster as each member sees it, and this node's processes |
//! | `GET /processes` | this node's processes (the first [`PROCESSES_MAX`] by id, and the total) |
//! | `GET /processes/{id}` | one process |
//! | `POST /processes/{id}/kill` | ends it with reason `kill` (a supervisor restarts it) |
//!
//! # What a view holds
//! - The members, the leader and the term, as this node sees them.
//! - For each member, what it reports over the mesh ([`VIEW_RPC`], asked
//!   concurrently, each within [`VIEW_RPC_TIMEOUT`]; `null` for one that
//!   does not answer): its status, its log's progress (last entry,
//!   committed, applied, snapshot; on the leader, each member's matched
//!   index), its live processes, and how long each of its mesh links has
//!   been silent. A link silent past [`SUSPECT_SILENCE`] is drawn as cut
//!   in the reachability matrix: heartbeats come every 500 ms, so a
//!   partition shows within about a second, before the mesh's watchdog
//!   calls the peer down (2 s).
//! - This node's processes ([`processes`]): each one's parent (a supervised
//!   child's supervisor: the tree), names, message type, mailbox depth and
//!   bytes, memory, restarts, links and monitors.
//!
//! # Bounds
//! - The session cookie ([`super::guard::SESSION_COOKIE`]) is an HMAC of the
//!   token (never the token), `HttpOnly`, `SameSite=Strict`, and admits
//!   only `GET /ui` and `GET /ui/events`. Everything else needs the bearer
//!   token, as on every admin endpoint.
//! - At most [`UI_STREAMS_MAX`] streams at once (one more gets 503
//!   `overloaded`). Each stream's views are made by a task of its own into
//!   a queue of [`UI_STREAM_BUFFER`]; a client that falls that far behind
//!   (a stalled or dead browser) is dropped, so a node never buffers more
//!   than that for it. The stream ends when the node stops.
//! - A view lists at most [`PROCESSES_MAX`] processes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use foundation::{ExitReason, Node, Pid, ProcessInfo};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use super::error;
use super::guard::{Guard, SESSION_COOKIE};
use crate::consensus::{ClusterStatus, LogProgress};
use crate::server::{Server, ServerInner, now_ms};

/// Streams served at once.
pub const UI_STREAMS_MAX: usize = 8;
/// How often a stream sends a view.
pub const UI_TICK: Duration = Duration::from_millis(500);
/// Views queued for a client; one more and the client is dropped.
pub const UI_STREAM_BUFFER: usize = 4;
/// Processes a view or `GET /processes` lists.
pub const PROCESSES_MAX: usize = 2000;
/// The RPC a member answers with its own view ([`MemberView`]).
pub const VIEW_RPC: &str = "admin.view";
/// How long a view waits for each member's answer.
pub const VIEW_RPC_TIMEOUT: Duration = Duration::from_millis(400);
/// A mesh link silent this long is drawn as cut.
pub const SUSPECT_SILENCE: Duration = Duration::from_millis(1000);

const PAGE: &str = include_str!("observer/index.html");
const LOGIN: &str = include_str!("observer/login.html");

/// The observer's shared state: the node, the guard (for the login) and
/// the streams' permits.
#[derive(Clone)]
pub(crate) struct Observer {
    pub server: Server,
    pub guard: Arc<Guard>,
    pub streams: Arc<Semaphore>,
}

/// A member's own view of itself, as [`VIEW_RPC`] answers it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberView {
    /// Its name.
    pub node: String,
    /// Its consensus status (`None`: it runs no coordination).
    pub status: Option<ClusterStatus>,
    /// Where its log stands (`None`: it runs no consensus member).
    pub progress: Option<LogProgress>,
    /// Its connected mesh peers, and how long each has been silent (ms).
    pub silent_ms: BTreeMap<String, u64>,
    /// Its live processes.
    pub live_processes: usize,
}

/// This node's own view.
pub(crate) fn member_view(server: &Server) -> MemberView {
    let cluster = server.cluster();
    MemberView {
        node: cluster.name().to_owned(),
        status: server.coordination().map(crate::consensus::Consensus::status),
        progress: server.consensus().map(crate::consensus::Consensus::progress),
        silent_ms: cluster.silences().into_iter().map(|(n, d)| (n, d.as_millis() as u64)).collect(),
        live_processes: cluster.node().live_processes(),
    }
}

/// Answers [`VIEW_RPC`] on this node's mesh. The handler holds the server
/// weakly: the mesh it is registered on belongs to the server.
pub(crate) fn register_view_rpc(inner: &Arc<ServerInner>) {
    let weak: Weak<ServerInner> = Arc::downgrade(inner);
    inner.cluster.register_rpc(VIEW_RPC, move |(): ()| {
        let server = weak.upgrade().map(|inner| Server { inner });
        async move { server.map(|s| member_view(&s)) }
    });
}

/// A type's name without its paths: `(bytes::Bytes, foundation::reply::Reply<u8>)`
/// reads as `(Bytes, Reply<u8>)`.
pub(crate) fn short_type(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            word.clear();
        } else {
            out.push_str(&word);
            word.clear();
            out.push(c);
        }
    }
    out + &word
}

/// One process as the observer shows it.
fn process_json(info: &ProcessInfo) -> serde_json::Value {
    let local = |p: Pid| if p.node() == info.pid.node() { json!(p.id()) } else { json!(p.to_string()) };
    let short = short_type(info.message_type);
    json!({
        "id": info.pid.id(),
        "pid": info.pid.to_string(),
        "parent": info.parent.map(local),
        "names": info.names,
        "message_type": short,
        "mailbox_len": info.mailbox_len,
        "mailbox_bytes": info.mailbox_bytes,
        "memory_bytes": info.memory_bytes,
        "received": info.received,
        "polls": info.polls,
        "restarts": info.restarts,
        "trap_exit": info.trap_exit,
        "links": info.links.iter().map(|p| local(*p)).collect::<Vec<_>>(),
        "monitors": info.monitors.iter().map(|p| local(*p)).collect::<Vec<_>>(),
    })
}

/// This node's processes: the first [`PROCESSES_MAX`] by id, and how many
/// there are.
pub(crate) fn processes(node: &Node) -> serde_json::Value {
    let pids = node.processes();
    let shown: Vec<_> = pids.iter().take(PROCESSES_MAX).filter_map(|p| node.process_info(*p)).map(|i| process_json(&i)).collect();
    json!({ "total": pids.len(), "truncated": pids.len() > PROCESSES_MAX, "processes": shown })
}

/// The whole view: this node's idea of the group, every member's own view,
/// and this node's processes.
async fn view(server: &Server) -> serde_json::Value {
    let me = member_view(server);
    let status = me.status.clone();
    let members = status.as_ref().map(|s| s.members.clone()).unwrap_or_else(|| vec![me.node.clone()]);
    let cluster = server.cluster().clone();
    let asks = members.iter().filter(|m| **m != me.node).map(|m| {
        let cluster = cluster.clone();
        let m = m.clone();
        async move {
            let answer: Option<MemberView> = cluster.rpc(&m, VIEW_RPC, (), VIEW_RPC_TIMEOUT).await.ok().flatten();
            (m, answer)
        }
    });
    let mut views: BTreeMap<String, Option<MemberView>> = futures_util::future::join_all(asks).await.into_iter().collect();
    views.insert(me.node.clone(), Some(me.clone()));
    json!({
        "node": me.node,
        "at_ms": now_ms(server.cluster().node()),
        "members": members,
        "leader": status.as_ref().and_then(|s| s.leader.clone()),
        "term": status.as_ref().map(|s| s.term),
        "suspect_ms": SUSPECT_SILENCE.as_millis() as u64,
        "views": views,
        "processes": processes(server.cluster().node()),
    })
}

/// The login form (`message`: why the last attempt failed).
pub(crate) fn login_page(status: StatusCode, message: &str) -> Response {
    let escaped = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        LOGIN.replace("{{message}}", &escaped),
    )
        .into_response()
}

pub(crate) async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], PAGE).into_response()
}

/// The login form's fields.
#[derive(Deserialize)]
pub(crate) struct Login {
    token: String,
}

/// Checks the token a browser posted and sets the session cookie.
pub(crate) async fn login(State(ui): State<Observer>, form: Result<Form<Login>, axum::extract::rejection::FormRejection>) -> Response {
    let Ok(Form(Login { token })) = form else { return login_page(StatusCode::BAD_REQUEST, "send the form's token field") };
    if !ui.guard.token().matches(token.trim().as_bytes()) {
        tracing::debug!("observer login with a wrong token");
        return login_page(StatusCode::UNAUTHORIZED, "that is not this node's admin token");
    }
    let cookie = format!("{SESSION_COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict", ui.guard.token().session());
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, "/ui".to_owned())]).into_response()
}

/// The view stream. Views are made by a task of this stream's own; see
/// the module's bounds.
pub(crate) async fn events(State(ui): State<Observer>) -> Response {
    let Ok(permit) = ui.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("{UI_STREAMS_MAX} observer streams are open on this node; close one"),
        );
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(UI_STREAM_BUFFER);
    let server = ui.server.clone();
    let mut stop = server.inner.stop.subscribe();
    let rt = server.cluster().node().rt().clone();
    rt.spawn(async move {
        let _permit = permit;
        let mut tick = tokio::time::interval(UI_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            let event = match Event::default().event("view").json_data(view(&server).await) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "observer: a view did not encode");
                    return;
                }
            };
            match tx.try_send(event) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(queued = UI_STREAM_BUFFER, "observer: a client fell behind; its stream is dropped");
                    return;
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Sse::new(stream).into_response()
}

/// `GET /processes`.
pub(crate) async fn list(State(ui): State<Observer>) -> Response {
    axum::Json(processes(ui.server.cluster().node())).into_response()
}

fn no_process(id: u64) -> Response {
    error(StatusCode::NOT_FOUND, "no_process", format!("no live process {id} on this node"))
}

type Id = Result<Path<u64>, axum::extract::rejection::PathRejection>;

fn bad_id() -> Response {
    error(StatusCode::BAD_REQUEST, "bad_id", "a process is named by its local id on this node, a number (see GET /processes)")
}

/// `GET /processes/{id}`.
pub(crate) async fn one(State(ui): State<Observer>, id: Id) -> Response {
    let Ok(Path(id)) = id else { return bad_id() };
    let node = ui.server.cluster().node();
    match node.process_info(Pid::new(node.id(), id)) {
        Some(info) => axum::Json(process_json(&info)).into_response(),
        None => no_process(id),
    }
}

/// `POST /processes/{id}/kill`.
pub(crate) async fn kill(State(ui): State<Observer>, id: Id) -> Response {
    let Ok(Path(id)) = id else { return bad_id() };
    let node = ui.server.cluster().node();
    let pid = Pid::new(node.id(), id);
    if !node.exit(pid, ExitReason::Kill) {
        return no_process(id);
    }
    tracing::info!(%pid, "admin API: process killed");
    axum::Json(json!({ "killed": id, "pid": pid.to_string() })).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(super::short_type("(bytes::Bytes, foundation::reply::Reply<bytes::Bytes>)"), "(Bytes, Reply<Bytes>)");
        assert_eq!(super::short_type("u32"), "u32");
        assert_eq!(super::short_type("foundation::supervisor::SupervisorMsg"), "SupervisorMsg");
        assert_eq!(super::short_type("alloc::vec::Vec<[u8; 4]>"), "Vec<[u8; 4]>");
    }
}
