//! An OpenTelemetry collector for tests: it listens on loopback, takes
//! OTLP/HTTP trace exports (`POST /v1/traces`, protobuf bodies), decodes
//! them with the OpenTelemetry protocol's own generated types and keeps
//! every span, so a test can check what a node really sent on the wire.
//!
//! Bounds: a request head up to 64 KiB and a body up to 16 MiB; at most
//! [`SPANS_MAX`] spans are kept (later ones are counted, not kept). A
//! request it cannot decode is answered 400 and counted in
//! [`Collector::bad_requests`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most spans a collector keeps.
pub const SPANS_MAX: usize = 100_000;
const HEAD_BYTES_MAX: usize = 64 * 1024;
const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One span as the collector got it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// The trace id, 32 hex digits.
    pub trace_id: String,
    /// The span id, 16 hex digits.
    pub span_id: String,
    /// The parent's span id, if it has one.
    pub parent_span_id: Option<String>,
    /// The span's name.
    pub name: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    pub kind: &'static str,
    /// Start and end, in nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// The span's attributes, every value as text.
    pub attributes: BTreeMap<String, String>,
    /// The error status's message, if the span failed.
    pub error: Option<String>,
    /// The resource's `service.name`.
    pub service: Option<String>,
}

impl ReceivedSpan {
    /// An attribute's value as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running collector; it stops when dropped.
#[derive(Debug)]
pub struct Collector {
    addr: String,
    kept: Arc<Kept>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Kept {
    spans: std::sync::Mutex<Vec<ReceivedSpan>>,
    requests: AtomicUsize,
    bad: AtomicUsize,
    dropped: AtomicUsize,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    /// Starts one on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        #[allow(clippy::disallowed_methods)] // a test's own collector, not cluster code
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let kept = Arc::new(Kept::default());
        let serving = kept.clone();
        #[allow(clippy::disallowed_methods)] // a test's own collector, not cluster code
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                // One request at a time: an exporter sends one batch at a time.
                let _ = tokio::time::timeout(READ_TIMEOUT, serve(&mut stream, &serving)).await;
            }
        });
        Ok(Self { addr, kept, task })
    }

    /// The endpoint to give an exporter: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span kept so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.kept.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Export requests taken (decoded or not).
    pub fn requests(&self) -> usize {
        self.kept.requests.load(Ordering::Relaxed)
    }

    /// Requests that were not OTLP trace exports (answered 400).
    pub fn bad_requests(&self) -> usize {
        self.kept.bad.load(Ordering::Relaxed)
    }

    /// Spans not kept because [`SPANS_MAX`] were.
    pub fn dropped(&self) -> usize {
        self.kept.dropped.load(Ordering::Relaxed)
    }
}

async fn serve(stream: &mut tokio::net::TcpStream, kept: &Kept) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > HEAD_BYTES_MAX {
            return respond(stream, 431, "head too large").await;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n <= BODY_BYTES_MAX);
    kept.requests.fetch_add(1, Ordering::Relaxed);
    let (Some(len), true) = (len, head.starts_with("post /v1/traces ")) else {
        kept.bad.fetch_add(1, Ordering::Relaxed);
        return respond(stream, 400, "a POST /v1/traces with a Content-Length is expected").await;
    };
    let mut body = buf.split_off(head_end);
    while body.len() < len {
        let mut chunk = vec![0u8; (len - body.len()).min(64 * 1024)];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    match ExportTraceServiceRequest::decode(&body[..len]) {
        Ok(request) => {
            keep(kept, request);
            respond(stream, 200, "").await
        }
        Err(e) => {
            kept.bad.fetch_add(1, Ordering::Relaxed);
            respond(stream, 400, &e.to_string()).await
        }
    }
}

fn keep(kept: &Kept, request: ExportTraceServiceRequest) {
    let mut spans = kept.spans.lock().unwrap_or_else(|e| e.into_inner());
    for resource_spans in request.resource_spans {
        let service = resource_spans.resource.as_ref().and_then(|r| attributes(&r.attributes).remove("service.name"));
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            if spans.len() >= SPANS_MAX {
                kept.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let error = span.status.as_ref().filter(|s| s.code == 2).map(|s| s.message.clone());
            spans.push(ReceivedSpan {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                name: span.name,
                kind: match span.kind {
                    1 => "internal",
                    2 => "server",
                    3 => "client",
                    4 => "producer",
                    5 => "consumer",
                    _ => "unspecified",
                },
                start_ns: span.start_time_unix_nano,
                end_ns: span.end_time_unix_nano,
                attributes: attributes(&span.attributes),
                error,
                service: service.clone(),
            });
        }
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn respond(stream: &mut tokio::net::TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let content_type = if status == 200 { "application/x-protobuf" } else { "text/plain" };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status == 200 { "OK" } else { "Bad Request" },
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
