//! Spans of the work a cluster does, exported to an OpenTelemetry
//! collector over OTLP/HTTP (protobuf bodies, `POST …/v1/traces`).
//!
//! - **What opens spans.** Only work inside a trace: a context set by
//!   `with_global_context`, carried by a message or a frame, or read from an
//!   API request's `traceparent` (the admin API starts a trace for a request
//!   without one). Background traffic with no context (heartbeats, Raft's
//!   own replication) opens none. Each span is a child of the context it ran
//!   in and runs its work in its own child context, so the next hop, on this
//!   node or another, is its child in turn:
//!   - an RPC: `rpc NAME` on the caller (kind client) and on the callee
//!     (kind server);
//!   - a remote send: `send` when the frame is queued (producer) and
//!     `receive` when it is delivered (consumer), the message then carrying
//!     the receive span's context;
//!   - a consensus write: `consensus.write` where it is asked (the forward
//!     to the leader is an RPC under it) and `raft.client_write` on the
//!     leader, with the entry's index and term;
//!   - an admin API request: `METHOD ROUTE` (kind server).
//!
//!   Every span carries `foundation.node` (the node's name); a failed one
//!   has an error status with the reason. An unsampled trace is carried on
//!   but never recorded.
//! - **Export** is OpenTelemetry's batch span processor with
//!   `opentelemetry-otlp`'s HTTP exporter, over this module's own small
//!   client on hyper (the exporter's thread hands each request to the node's
//!   runtime, [`foundation::rt::Remote`]). Plain `http://` only: send to a
//!   local collector, which forwards over TLS. Headers the collector needs
//!   (credentials) come from `OTEL_EXPORTER_OTLP_HEADERS`, never argv.
//! - **Bounds.** Ending a span never waits: it goes into a queue of
//!   [`QUEUE_SPANS_MAX`] spans, and the newest are dropped while it is full.
//!   Batches of up to [`BATCH_SPANS_MAX`] leave every [`EXPORT_INTERVAL`]
//!   or when full, one at a time, each attempt bounded by
//!   [`EXPORT_TIMEOUT`]; a response body is read up to
//!   [`RESPONSE_BYTES_MAX`]. An unreachable or refusing collector is logged
//!   with the reason at most once per [`FAILURE_LOG_EVERY`] (with how many
//!   failures that line stands for); the node never waits for it.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use foundation::context::Context;
use foundation::rt::Rt;
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanProcessor};

use crate::log_limit::LogLimit;

/// How often a batch leaves, full or not.
pub const EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Spans waiting for export; more are dropped.
pub const QUEUE_SPANS_MAX: usize = 8192;
/// Spans in one request.
pub const BATCH_SPANS_MAX: usize = 512;
/// One export attempt, connection included.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Export failures are logged at most this often.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);
/// A collector's response body is read up to this much.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// Why spans cannot be exported to an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The endpoint is not an `http://host:port[/path]` URL.
    #[error("OTLP endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Made outside an async runtime (exports run on the caller's runtime).
    #[error("an OTLP exporter must be made inside the node's runtime")]
    NoRuntime,
    /// The OpenTelemetry exporter refused its configuration.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// Where spans go: one OTLP/HTTP exporter, shared by every node of this
/// OS process that was given it (each span names its node). Cheap to
/// clone.
#[derive(Clone)]
pub struct Tracer(Arc<Inner>);

struct Inner {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
    endpoint: String,
    failures: Arc<Failures>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("endpoint", &self.0.endpoint).finish()
    }
}

impl Tracer {
    /// An exporter to the collector at `endpoint`: `http://host:port`
    /// (spans go to `/v1/traces` there, as with `OTEL_EXPORTER_OTLP_ENDPOINT`)
    /// or a full URL with its own path. Call it inside the runtime that
    /// should carry the exports.
    pub fn otlp(endpoint: &str) -> Result<Self, TracesError> {
        let url = traces_url(endpoint)?;
        let remote = foundation::rt::Remote::current().ok_or(TracesError::NoRuntime)?;
        let failures = Arc::new(Failures { endpoint: url.clone(), total: AtomicU64::new(0), log: LogLimit::new(1, FAILURE_LOG_EVERY) });
        let client = Client { remote, failures: failures.clone() };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(url.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TracesError::Exporter(e.to_string()))?;
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE_SPANS_MAX)
            .with_max_export_batch_size(BATCH_SPANS_MAX)
            .with_scheduled_delay(EXPORT_INTERVAL)
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
        processor.set_resource(&Resource::builder_empty().with_service_name("foundation").build());
        let scope = InstrumentationScope::builder("foundation").with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Self(Arc::new(Inner { processor, scope, endpoint: url, failures })))
    }

    /// The URL spans are posted to.
    pub fn endpoint(&self) -> &str {
        &self.0.endpoint
    }

    /// Export attempts that failed so far (each one logged or counted in
    /// the next log line).
    pub fn failures(&self) -> u64 {
        self.0.failures.total.load(Ordering::Relaxed)
    }

    /// Sends every span ended so far, waiting up to [`EXPORT_TIMEOUT`] (off
    /// the async workers).
    pub async fn flush(&self) {
        let this = self.clone();
        if let Err(e) = foundation::rt::spawn_blocking(move || this.0.processor.force_flush()).await.unwrap_or(Ok(())) {
            tracing::debug!(error = %e, "otlp: a flush did not complete");
        }
    }

    /// Flushes, then stops the exporter: spans ended later are dropped. For
    /// a process on its way out.
    pub async fn shutdown(&self) {
        let this = self.clone();
        let _ = foundation::rt::spawn_blocking(move || this.0.processor.shutdown_with_timeout(EXPORT_TIMEOUT)).await;
    }

    /// A span whose work runs in a child of `parent` (see the module docs);
    /// `None` for an unsampled trace.
    pub(crate) fn child(&self, rt: &Rt, node: &str, parent: &Context, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Option<Span> {
        if !parent.is_sampled() {
            return None;
        }
        let own = parent.child(rt);
        Some(self.span(rt, node, own, Some(parent.span_id_u64()), name.into(), kind))
    }

    /// A span that is `ctx`'s own span, the root of its trace (an API
    /// request that came with no `traceparent`).
    pub(crate) fn root(&self, rt: &Rt, node: &str, ctx: Context, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Option<Span> {
        ctx.is_sampled().then(|| self.span(rt, node, ctx, None, name.into(), kind))
    }

    fn span(&self, rt: &Rt, node: &str, ctx: Context, parent: Option<u64>, name: Cow<'static, str>, kind: SpanKind) -> Span {
        Span {
            tracer: self.clone(),
            rt: rt.clone(),
            ctx,
            parent,
            name,
            kind,
            start: rt.system_time(),
            attributes: vec![KeyValue::new("foundation.node", node.to_owned())],
            status: Status::Unset,
        }
    }
}

/// A span of this node in the current trace: `None` when the node records
/// no spans or the running work is in no trace.
pub(crate) fn current(inner: &crate::mesh::Inner, name: impl FnOnce() -> String, kind: SpanKind) -> Option<Span> {
    let tracer = inner.config.traces.as_ref()?;
    let parent = foundation::context::current()?;
    tracer.child(inner.node.rt(), &inner.config.name, &parent, name(), kind)
}

/// A span of this node under `parent` (a context that came in a frame).
pub(crate) fn under(inner: &crate::mesh::Inner, parent: &Context, name: impl FnOnce() -> String, kind: SpanKind) -> Option<Span> {
    let tracer = inner.config.traces.as_ref()?;
    tracer.child(inner.node.rt(), &inner.config.name, parent, name(), kind)
}

/// An open span: ended (and queued for export) when dropped, however the
/// work it covers ended, a cancellation included.
pub(crate) struct Span {
    tracer: Tracer,
    rt: Rt,
    ctx: Context,
    parent: Option<u64>,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    status: Status,
}

impl Span {
    /// The context the span's work runs in (its own span id).
    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }

    /// Adds an attribute.
    pub(crate) fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.attributes.push(KeyValue::new(key, value));
    }

    /// Marks the span failed, with why.
    pub(crate) fn fail(&mut self, why: impl std::fmt::Display) {
        self.status = Status::error(why.to_string());
    }

    /// Marks it by an outcome: an error fails it.
    pub(crate) fn outcome<T, E: std::fmt::Display>(&mut self, result: &Result<T, E>) {
        if let Err(e) = result {
            self.fail(e);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let flags = TraceFlags::SAMPLED;
        let context = SpanContext::new(
            TraceId::from_bytes(self.ctx.trace_id_u128().to_be_bytes()),
            SpanId::from_bytes(self.ctx.span_id_u64().to_be_bytes()),
            flags,
            false,
            TraceState::NONE,
        );
        let parent = self.parent.map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.to_be_bytes()));
        let data = SpanData {
            span_context: context,
            parent_span_id: parent,
            // The parent may have been on another node.
            parent_span_is_remote: self.parent.is_some(),
            span_kind: self.kind.clone(),
            name: std::mem::take(&mut self.name),
            start_time: self.start,
            end_time: self.rt.system_time().max(self.start),
            attributes: std::mem::take(&mut self.attributes),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: std::mem::replace(&mut self.status, Status::Unset),
            instrumentation_scope: self.tracer.0.scope.clone(),
        };
        self.tracer.0.processor.on_end(data);
    }
}

/// The URL spans are posted to, from what the user gave.
fn traces_url(endpoint: &str) -> Result<String, TracesError> {
    // Whatever precedes an `@` may be a password: never shown.
    let shown = match endpoint.split_once('@') {
        Some((before, after)) => format!("{}***@{after}", before.find("://").map_or("", |i| &before[..i + 3])),
        None => endpoint.to_owned(),
    };
    let bad = |reason: &str| TracesError::BadEndpoint { endpoint: shown.clone(), reason: reason.to_owned() };
    let uri: http::Uri = endpoint.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad("https is not supported: use http:// to a collector on this host or network, which forwards over TLS"));
        }
        _ => return Err(bad("give an http:// URL, e.g. http://127.0.0.1:4318")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host: give http://HOST:PORT"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials do not go in the URL (it is logged); set OTEL_EXPORTER_OTLP_HEADERS"));
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not supported: give the URL without it"));
    }
    let path = uri.path().trim_end_matches('/');
    let path = if path.is_empty() { "/v1/traces" } else { path };
    Ok(format!("http://{authority}{path}"))
}

/// Export failures, logged at most once per [`FAILURE_LOG_EVERY`].
struct Failures {
    endpoint: String,
    total: AtomicU64,
    log: LogLimit,
}

impl Failures {
    fn record(&self, why: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(unlogged) = self.log.check(&self.endpoint, foundation::rt::Instant::now()) {
            tracing::warn!(endpoint = %self.endpoint, unlogged, "otlp: spans not exported: {why}");
        }
    }
}

/// The exporter's HTTP client: each request runs on the node's runtime,
/// over its network seam, one connection per request.
#[derive(Clone)]
struct Client {
    remote: foundation::rt::Remote,
    failures: Arc<Failures>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("foundation OTLP client")
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.remote.spawn(async move {
            let sent = foundation::rt::timeout(EXPORT_TIMEOUT, post(request)).await;
            let _ = tx.send(sent.unwrap_or_else(|_| Err(format!("no answer within {EXPORT_TIMEOUT:?}"))));
        });
        let answer = rx.await.unwrap_or_else(|_| Err("the node's runtime is gone".to_owned()));
        match &answer {
            Err(why) => self.failures.record(why),
            Ok(resp) if !resp.status().is_success() => self.failures.record(&format!("the collector answered {}", resp.status())),
            Ok(_) => {}
        }
        answer.map_err(HttpError::from)
    }
}

/// One POST on a new connection.
async fn post(request: Request<Bytes>) -> Result<Response<Bytes>, String> {
    let authority = request.uri().authority().ok_or("no host in the URL")?.clone();
    let addr = if authority.port().is_some() { authority.to_string() } else { format!("{authority}:80") };
    let net = foundation::rt::TokioNetwork;
    let stream = foundation::rt::Network::connect(&net, &addr).await.map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    // The connection is driven here, with the request, and ends with it.
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(http::header::HOST, http::HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?);
    // To an origin server the request line carries the path alone.
    parts.uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let request = Request::from_parts(parts, http_body_util::Full::new(body));
    let exchange = async {
        let resp = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::Limited::new(body, RESPONSE_BYTES_MAX).collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>(Response::from_parts(parts, body))
    };
    tokio::pin!(exchange);
    tokio::select! {
        biased;
        out = &mut exchange => out,
        ended = conn => match ended {
            // The connection finished first: the exchange has its answer.
            Ok(()) => exchange.await,
            Err(e) => Err(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls_without_credentials() {
        assert_eq!(traces_url("http://127.0.0.1:4318").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("http://c:9/otlp/v1/traces").unwrap(), "http://c:9/otlp/v1/traces");
        for bad in ["https://c:4318", "c:4318", "http://user:pw@c:4318", "http://c:4318/x?token=1", "not a url"] {
            assert!(matches!(traces_url(bad), Err(TracesError::BadEndpoint { .. })), "{bad}");
        }
        let e = traces_url("http://user:hunter2@c:4318").unwrap_err().to_string();
        assert!(e.contains("http://***@c:4318") && !e.contains("hunter2"), "{e}");
    }
}
