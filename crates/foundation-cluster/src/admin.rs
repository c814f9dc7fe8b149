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
//!
//! Every error is JSON, `{"error": MESSAGE, "kind": KIND}`, with a 4xx for
//! bad requests (400 malformed, 404, 405, 409, 413 too large) and a 5xx when
//! the cluster cannot decide (503 no quorum or no leader, 504 outcome
//! unknown: the write may still commit).
//!
//! Values are UTF-8 text on this API.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use foundation::events::EventFilter;
use serde::Deserialize;
use serde_json::json;

use crate::consensus::{Command, ConsensusError, PROPOSAL_BYTES_DEFAULT};
use crate::server::{Server, Service, now_ms};

/// How long a request waits for consensus.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest key.
pub const KEY_BYTES_MAX: usize = 512;

/// A bound admin listener.
pub struct Serving(tokio::net::TcpListener);

impl Serving {
    /// Serves `router` until `shutdown` resolves.
    pub async fn serve(self, router: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        axum::serve(self.0, router).with_graceful_shutdown(shutdown).await
    }
}

/// Binds the admin address; returns the address bound (port 0 resolved).
pub async fn bind(addr: &str) -> Result<(String, Serving), String> {
    // The admin API is the operator's door, not a simulated cluster path.
    #[allow(clippy::disallowed_methods)]
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    Ok((bound, Serving(listener)))
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

/// The error response for a bad key, if it is one.
fn bad_key(key: &str) -> Option<Response> {
    (key.is_empty() || key.len() > KEY_BYTES_MAX || key.chars().any(char::is_control))
        .then(|| error(StatusCode::BAD_REQUEST, "bad_key", format!("a key is 1..={KEY_BYTES_MAX} bytes without control characters")))
}

/// The admin routes over a running node.
pub fn router(server: Server) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/kv/{key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint: see GET /status, /kv/{key}, /metrics, /events") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
        })
        .layer(axum::extract::DefaultBodyLimit::max(PROPOSAL_BYTES_DEFAULT))
        .layer(axum::middleware::from_fn_with_state(server.clone(), count_requests))
        .with_state(server)
}

async fn count_requests(State(server): State<Server>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req.uri().path().split('/').nth(1).unwrap_or("").to_owned();
    let method = req.method().to_string();
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

/// A small HTTP/1.1 client for the admin API (`foundation status`, tests).
pub mod client {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `method path` (with `body`) to `addr`; returns the status code
    /// and the body. One request per connection.
    pub async fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
        let net = foundation::rt::TokioNetwork;
        let mut stream = foundation::rt::Network::connect(&net, addr).await.map_err(|e| format!("cannot reach {addr}: {e}"))?;
        let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
        stream.write_all(body).await.map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("not an HTTP response from {addr}"))?;
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status line from {addr}"))?;
        Ok((status, body.to_owned()))
    }
}
