//! The admin HTTP API (JSON), served by `foundation node`:
//!
//! | endpoint | what it does |
//! |---|---|
//! | `GET /status` | this node's `cluster_status` (operational, quorum, leader, term, members, reachable) |
//! | `GET /kv/{key}` | a linearizable read: `{"key", "value"}`, or 404 |
//! | `PUT /kv/{key}` | writes the body through consensus; `?expected=V` or `?absent=true` makes it a compare-and-set (409 when it does not match) |
//! | `DELETE /kv/{key}` | deletes through consensus (404 if absent) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /events` | the event store; filters `correlation_id`, `kind`, `since_ms`, `until_ms`, `limit` |
//! | `GET /processes`, `GET /processes/{id}` | this node's processes ([`observer`]) |
//! | `POST /processes/{id}/kill` | ends a process with reason `kill` |
//! | `GET /ui`, `POST /ui/login`, `GET /ui/events` | the live observer ([`observer`]) |
//!
//! # Who may call it
//! Every request carries `Authorization: Bearer TOKEN` ([`token`]: the
//! node's `--admin-token-file`, or `admin.token` in its data directory),
//! else 401 `unauthorized` with `WWW-Authenticate: Bearer`. With
//! [`AdminConfig::open_reads`], `GET /status` and `GET /metrics` need no
//! token. The observer's page and stream (`GET /ui`, `GET /ui/events`)
//! also take the session cookie `POST /ui/login` sets once the browser
//! has posted the token ([`observer`]). A `Host` header that is not the bound address (or `localhost:PORT`
//! on loopback) or a configured name gets 421 `misdirected`, token or not
//! (DNS rebinding). Keys under the cluster services' prefixes
//! ([`crate::services::KeySpace`]) get 403 `forbidden_prefix` on
//! `/kv`: those services validate what they write.
//!
//! # Bounds (`admin/serve.rs`)
//! A request head must arrive within [`HEADER_READ_TIMEOUT`] (also the
//! idle bound between requests), a request finishes within
//! [`HTTP_REQUEST_TIMEOUT`], at most [`ADMIN_CONNECTIONS_MAX`] connections
//! and [`ADMIN_REQUESTS_MAX`] requests are served at once. Metric labels are
//! the matched route template (`unmatched` for none) and one of
//! [`METHOD_LABELS`]: a flood of odd paths or methods adds no series.
//!
//! Every error is JSON, `{"error": MESSAGE, "kind": KIND}`, with a 4xx for
//! bad requests (400 malformed, 401, 403, 404, 405, 409, 413 too large, 421)
//! and a 5xx when the cluster cannot decide (503 no quorum, no leader, or
//! overloaded, 504 outcome unknown: the write may still commit).
//!
//! Values are UTF-8 text on this API.

pub mod client;
mod guard;
pub mod observer;
pub(crate) mod serve;
pub mod token;

pub use guard::{AdminConfig, OPEN_READS, SESSION_COOKIE, SESSION_PATHS};
pub use serve::{ADMIN_CONNECTIONS_MAX, ADMIN_REQUESTS_MAX, HEADER_BYTES_MAX, HEADER_READ_TIMEOUT, HTTP_REQUEST_TIMEOUT};
pub use token::{AdminToken, TOKEN_FILE, TokenError};

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use foundation::events::EventFilter;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::consensus::{Command, ConsensusError, PROPOSAL_BYTES_DEFAULT};
use crate::server::{Server, ServerError, Service, now_ms};
use crate::services::internal_prefix;
pub(crate) use guard::Guard;

/// How long a request waits for consensus.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest key.
pub const KEY_BYTES_MAX: usize = 512;

/// The method labels of the request counter; any other method counts as `other`.
pub const METHOD_LABELS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// A bound admin listener, with its checks.
pub struct Serving {
    listener: Box<dyn foundation::rt::Listener>,
    guard: Arc<Guard>,
    addr: String,
}

impl Serving {
    /// The address bound (port 0 resolved).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The data directory's token file, when the token came from there.
    pub fn token_file(&self) -> Option<&FsPath> {
        self.guard.token_file.as_deref()
    }

    /// Serves the API over `server` until `stop` turns true.
    pub(crate) fn start(self, server: Server, stop: tokio::sync::watch::Receiver<bool>) {
        let rt = server.cluster().node().rt().clone();
        let router = router(server, self.guard);
        rt.clone().spawn(serve::serve(rt, self.listener, router, stop));
    }
}

/// The token `config` names: given, or the data directory's.
fn resolve_token(config: &AdminConfig, data_dir: Option<&FsPath>) -> Result<(AdminToken, Option<PathBuf>), ServerError> {
    match (&config.token, data_dir) {
        (Some(token), _) => Ok((token.clone(), None)),
        (None, Some(dir)) if config.token_in_data_dir => {
            let (token, file) = AdminToken::in_data_dir(dir).map_err(|e| ServerError::Config(e.to_string()))?;
            Ok((token, Some(file)))
        }
        _ => Err(ServerError::Config(
            "the admin API needs a token: give one (--admin-token-file), or a data directory to keep admin.token in (--data-dir)".into(),
        )),
    }
}

/// Resolves the token and binds the admin address.
/// Bound on `rt` (where its connections will be served: a socket belongs
/// to the reactor of the runtime it was made on).
pub async fn bind(rt: &foundation::rt::Rt, addr: &str, config: &AdminConfig, data_dir: Option<&FsPath>) -> Result<Serving, ServerError> {
    let (token, token_file) = resolve_token(config, data_dir)?;
    let http = |reason: String| ServerError::Http { addr: addr.to_owned(), reason };
    // Through the node's network, like the mesh's listener.
    let (net, owned) = (rt.network().clone(), addr.to_owned());
    let bound = rt.spawn(async move { net.bind(&owned).await }).await;
    let listener = bound.map_err(|e| http(format!("the bind task failed: {e}")))?.map_err(|e| http(e.to_string()))?;
    let local = listener.local_addr().map_err(|e| http(e.to_string()))?;
    let bound: std::net::SocketAddr = local.parse().map_err(|e| http(format!("bound to {local}, not an IP address and port: {e}")))?;
    let guard = Arc::new(Guard::new(config, token, token_file, bound));
    Ok(Serving { listener, guard, addr: bound.to_string() })
}

/// A JSON error response.
fn error(status: StatusCode, kind: &str, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string(), "kind": kind }))).into_response()
}

fn not_running(service: Service) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "service_not_running",
        format!("the {} service does not run on this node (see --services)", service.name()),
    )
}

fn consensus_error(e: ConsensusError) -> Response {
    let (status, kind) = match &e {
        ConsensusError::NoQuorum { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_quorum"),
        ConsensusError::NoLeader(_) | ConsensusError::NotLeader => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
        ConsensusError::Unknown(_) => (StatusCode::GATEWAY_TIMEOUT, "unknown_outcome"),
        ConsensusError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        // The member's storage failed: it is out until it has reopened it.
        ConsensusError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_failed"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error(status, kind, e)
}

/// The error response for a bad key, if it is one: malformed (400), or
/// under a service's prefix (403: write those through the service).
fn bad_key(key: &str) -> Option<Response> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX || key.chars().any(char::is_control) {
        return Some(error(StatusCode::BAD_REQUEST, "bad_key", format!("a key is 1..={KEY_BYTES_MAX} bytes without control characters")));
    }
    internal_prefix(key)
        .map(|p| error(StatusCode::FORBIDDEN, "forbidden_prefix", format!("keys under {p:?} belong to a cluster service; use another key")))
}

/// The admin routes over a running node, behind `guard`.
pub(crate) fn router(server: Server, guard: Arc<Guard>) -> Router {
    let ui =
        observer::Observer { server: server.clone(), guard: guard.clone(), streams: Arc::new(Semaphore::new(observer::UI_STREAMS_MAX)) };
    let observed = Router::new()
        .route("/ui", get(observer::page))
        .route("/ui/login", post(observer::login))
        .route("/ui/events", get(observer::events))
        .route("/processes", get(observer::list))
        .route("/processes/{id}", get(observer::one))
        .route("/processes/{id}/kill", post(observer::kill))
        .with_state(ui);
    Router::new()
        .route("/status", get(status))
        .route("/kv/{key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .merge(observed)
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, "not_found", "no such endpoint: see GET /status, /kv/{key}, /metrics, /events, /processes, /ui")
        })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
        })
        .layer(axum::extract::DefaultBodyLimit::max(PROPOSAL_BYTES_DEFAULT))
        .layer(axum::middleware::from_fn_with_state(server.clone(), trace_requests))
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
        .layer(axum::middleware::from_fn_with_state(server.clone(), count_requests))
        .with_state(server)
}

/// With spans recorded ([`crate::traces`]), an admitted request runs in a
/// server span: a child of the request's `traceparent` (and `baggage`), or
/// the root of a new trace. Its response carries the span's `traceparent`,
/// so a client can find the trace.
async fn trace_requests(State(server): State<Server>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(tracer) = server.cluster().traces() else { return next.run(req).await };
    let cluster = server.cluster();
    let (rt, node) = (cluster.node().rt(), cluster.name());
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let name = format!("{} {route}", req.method());
    let headers: Vec<(String, String)> = ["traceparent", "baggage"]
        .into_iter()
        .filter_map(|h| Some((h.to_owned(), req.headers().get(h)?.to_str().ok()?.to_owned())))
        .collect();
    let span = match foundation::context::Context::from_headers(&headers) {
        Ok(parent) => tracer.child(rt, node, &parent, name, opentelemetry::trace::SpanKind::Server),
        Err(_) => tracer.root(rt, node, foundation::context::Context::generate(rt), name, opentelemetry::trace::SpanKind::Server),
    };
    let Some(mut span) = span else { return next.run(req).await };
    span.set("http.request.method", req.method().to_string());
    span.set("http.route", route);
    let ctx = span.context().clone();
    let mut resp = foundation::context::with_global_context(ctx.clone(), next.run(req)).await;
    let status = resp.status();
    span.set("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.fail(status);
    }
    if let Some((_, v)) = ctx.to_headers().iter().find(|(k, _)| k == "traceparent")
        && let Ok(v) = axum::http::HeaderValue::from_str(v)
    {
        resp.headers_mut().insert("traceparent", v);
    }
    resp
}

/// Counts every request, refused ones too, by bounded labels only: the
/// route template, a method of [`METHOD_LABELS`] or `other`, the status.
async fn count_requests(State(server): State<Server>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let method = METHOD_LABELS.into_iter().find(|m| req.method().as_str() == *m).unwrap_or("other");
    let resp = next.run(req).await;
    if let Some(t) = server.telemetry() {
        let status = resp.status().as_u16().to_string();
        t.record(|| {
            metrics::counter!("foundation_http_requests_total", "route" => route, "method" => method, "status" => status).increment(1);
        });
    }
    resp
}

async fn status(State(server): State<Server>) -> Response {
    let Some(coordination) = server.coordination() else { return not_running(Service::Coordination) };
    let s = coordination.status();
    axum::Json(json!({
        "node": server.cluster().name(),
        "operational": s.operational,
        "quorum": s.quorum,
        "leader": s.leader,
        "term": s.term,
        "members": s.members,
        "reachable": s.reachable,
        "storage_error": s.storage_error,
    }))
    .into_response()
}

async fn kv_get(State(server): State<Server>, Path(key): Path<String>) -> Response {
    if let Some(r) = bad_key(&key) {
        return r;
    }
    let Some(consensus) = server.consensus() else { return not_running(Service::Consensus) };
    match consensus.get(&key, REQUEST_TIMEOUT).await {
        Ok(Some(v)) => axum::Json(json!({ "key": key, "value": String::from_utf8_lossy(&v) })).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no key {key:?}")),
        Err(e) => consensus_error(e),
    }
}

/// `PUT /kv/{key}` options.
#[derive(Deserialize, Default)]
struct PutOptions {
    /// Compare-and-set: the value the key must have.
    expected: Option<String>,
    /// Compare-and-set: the key must be absent.
    absent: Option<bool>,
}

/// The 409 message: what the key holds, against what was expected (`None`:
/// absent).
fn cas_failed(found: Option<&[u8]>, expected: Option<&[u8]>) -> String {
    let text = |v: &[u8]| format!("{:?}", String::from_utf8_lossy(v));
    match (found, expected) {
        (Some(f), None) => format!("compare-and-set failed: the key is set (to {}), not absent", text(f)),
        (Some(f), Some(e)) => format!("compare-and-set failed: the value is {}, not {}", text(f), text(e)),
        (None, Some(e)) => format!("compare-and-set failed: the key is absent, not {}", text(e)),
        (None, None) => "compare-and-set failed: the key is absent".to_owned(),
    }
}

async fn kv_put(
    State(server): State<Server>,
    Path(key): Path<String>,
    options: Result<Query<PutOptions>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(r) = bad_key(&key) {
        return r;
    }
    let options = match options {
        Ok(Query(o)) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_query", e.body_text()),
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), "bad_body", e.body_text()),
    };
    if std::str::from_utf8(&body).is_err() {
        return error(StatusCode::BAD_REQUEST, "bad_value", "values are UTF-8 text on this API");
    }
    let command = match (options.expected, options.absent) {
        (Some(_), Some(true)) => return error(StatusCode::BAD_REQUEST, "bad_query", "give `expected` or `absent=true`, not both"),
        (Some(expected), _) => Command::Cas { key: key.clone(), expected: Some(expected.into_bytes()), new: Some(body.to_vec()) },
        (None, Some(true)) => Command::Cas { key: key.clone(), expected: None, new: Some(body.to_vec()) },
        (None, _) => Command::Put { key: key.clone(), value: body.to_vec() },
    };
    // For a compare-and-set, what it expected (None: absent), to say what
    // it found instead.
    let expected = match &command {
        Command::Cas { expected, .. } => Some(expected.clone()),
        _ => None,
    };
    let Some(consensus) = server.consensus() else { return not_running(Service::Consensus) };
    match consensus.reach_consensus(command, REQUEST_TIMEOUT).await {
        Ok(d) if expected.is_some() && !d.applied.ok => {
            error(StatusCode::CONFLICT, "cas_failed", cas_failed(d.applied.previous.as_deref(), expected.flatten().as_deref()))
        }
        Ok(d) => {
            let node = server.cluster().node().clone();
            if let Some(events) = server.events() {
                events.store(
                    now_ms(&node),
                    "kv.put",
                    None,
                    BTreeMap::from([("key".to_owned(), key.clone()), ("index".into(), d.index.to_string())]),
                );
            }
            axum::Json(json!({
                "key": key,
                "committed": d.committed,
                "term": d.term,
                "index": d.index,
                "previous": d.applied.previous.map(|v| String::from_utf8_lossy(&v).into_owned()),
            }))
            .into_response()
        }
        Err(e) => consensus_error(e),
    }
}

async fn kv_delete(State(server): State<Server>, Path(key): Path<String>) -> Response {
    if let Some(r) = bad_key(&key) {
        return r;
    }
    let Some(consensus) = server.consensus() else { return not_running(Service::Consensus) };
    match consensus.reach_consensus(Command::Delete { key: key.clone() }, REQUEST_TIMEOUT).await {
        Ok(d) if !d.applied.ok => error(StatusCode::NOT_FOUND, "not_found", format!("no key {key:?}")),
        Ok(d) => axum::Json(json!({ "key": key, "deleted": true, "term": d.term, "index": d.index })).into_response(),
        Err(e) => consensus_error(e),
    }
}

async fn metrics(State(server): State<Server>) -> Response {
    let Some(telemetry) = server.telemetry() else { return not_running(Service::Telemetry) };
    telemetry.record(|| {
        if let Some(c) = server.consensus() {
            let status = c.status();
            metrics::gauge!("foundation_raft_term").set(status.term as f64);
            metrics::gauge!("foundation_raft_is_leader").set(if c.is_leader() { 1.0 } else { 0.0 });
            metrics::gauge!("foundation_cluster_operational").set(if status.operational { 1.0 } else { 0.0 });
        }
        metrics::gauge!("foundation_cluster_peers").set(server.cluster().peers().len() as f64);
        let stats = server.cluster().node().stats();
        metrics::counter!("foundation_processes_spawned_total").absolute(stats.spawned);
        metrics::gauge!("foundation_processes_live").set(stats.live as f64);
        for (reason, n) in &stats.exited {
            metrics::counter!("foundation_processes_exited_total", "reason" => *reason).absolute(*n);
        }
        metrics::counter!("foundation_supervisor_restarts_total").absolute(stats.restarts);
        metrics::counter!("foundation_supervisor_intensity_reached_total").absolute(stats.intensity_reached);
        metrics::counter!("foundation_mailbox_full_total").absolute(stats.mailbox_full);
        metrics::counter!("foundation_mailbox_dropped_total").absolute(stats.mailbox_dropped);
        if let Some(events) = server.events() {
            metrics::gauge!("foundation_events_stored").set(events.len() as f64);
        }
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], telemetry.prometheus().render()).into_response()
}

async fn events(State(server): State<Server>, filter: Result<Query<EventFilter>, QueryRejection>) -> Response {
    let Some(events) = server.events() else { return not_running(Service::Events) };
    match filter {
        Ok(Query(f)) => axum::Json(events.query(&f)).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_query", e.body_text()),
    }
}
