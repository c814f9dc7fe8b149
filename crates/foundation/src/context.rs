//! Request context: a trace identity, a user id and key/values that follow
//! a piece of work through processes and across nodes.
//!
//! - [`with_global_context`] runs a future with a context; [`current`]
//!   returns it from anywhere inside (any depth of calls and awaits).
//! - A message sent from inside a context carries it: the receiving process
//!   sees it as [`current`] while it handles that message (until its next
//!   receive). Remote sends and RPC calls carry it in their frames, so it
//!   survives any number of hops.
//! - On the wire it is W3C Trace Context (`traceparent`) plus W3C Baggage
//!   (`baggage`, holding the user id and the key/values), written and read
//!   by the OpenTelemetry propagators, so other W3C-speaking systems
//!   understand it.
//! - [`Context::span`] opens a `tracing` span carrying the ids; the cluster
//!   runs remote handlers inside it.
//!
//! A context is immutable and shared (`Arc`): carrying it costs a reference
//! count. `with` returns a changed copy.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

/// The baggage key that holds the user id.
pub const USER_ID: &str = "user_id";
/// Most key/values a context holds (W3C Baggage's limit).
pub const VALUES_MAX: usize = 64;
/// Most bytes of keys and values (W3C Baggage allows 8192 for the header).
pub const VALUE_BYTES_MAX: usize = 4096;

/// Why a context could not be built or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// Too many key/values, or too many bytes of them.
    #[error("context too large: {0}")]
    TooLarge(String),
    /// A key is empty or not a token (letters, digits, `_-.`).
    #[error("invalid context key {0:?}")]
    InvalidKey(String),
    /// Headers from the wire carry no valid `traceparent`.
    #[error("no valid traceparent header")]
    NoTraceparent,
}

/// A request context. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Context(Arc<Inner>);

struct Inner {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
    values: BTreeMap<String, String>,
    /// The W3C headers, encoded once on first use.
    headers: OnceLock<Vec<(String, String)>>,
}

impl PartialEq for Inner {
    fn eq(&self, o: &Self) -> bool {
        (self.trace_id, self.span_id, self.sampled, &self.values) == (o.trace_id, o.span_id, o.sampled, &o.values)
    }
}
impl Eq for Inner {}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("trace_id", &self.trace_id())
            .field("span_id", &self.span_id())
            .field("values", &self.0.values)
            .finish()
    }
}

impl Context {
    /// A context for the trace `trace_id` (non-zero), as its root span.
    pub fn new(trace_id: u128) -> Self {
        let trace_id = trace_id.max(1);
        // A root span id derived from the trace id (non-zero, as W3C requires).
        let span_id = (trace_id as u64 ^ (trace_id >> 64) as u64).max(1);
        Self::from_parts(trace_id, span_id, true, BTreeMap::new())
    }

    /// A context with fresh random ids from the node's seeded RNG.
    pub fn generate(rt: &crate::rt::Rt) -> Self {
        let (t, s) = rt.with_rng(|r| (rand::Rng::random::<u128>(r), rand::Rng::random::<u64>(r)));
        Self::from_parts(t.max(1), s.max(1), true, BTreeMap::new())
    }

    fn from_parts(trace_id: u128, span_id: u64, sampled: bool, values: BTreeMap<String, String>) -> Self {
        Self(Arc::new(Inner { trace_id, span_id, sampled, values, headers: OnceLock::new() }))
    }

    /// The trace id as 32 lowercase hex digits (W3C form).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.0.trace_id)
    }

    /// The trace id as a number.
    pub fn trace_id_u128(&self) -> u128 {
        self.0.trace_id
    }

    /// The current span id as 16 hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.0.span_id)
    }

    /// The current span id as a number.
    pub fn span_id_u64(&self) -> u64 {
        self.0.span_id
    }

    /// Whether the trace is sampled (W3C's `sampled` flag): spans of an
    /// unsampled trace are carried on but not recorded.
    pub fn is_sampled(&self) -> bool {
        self.0.sampled
    }

    /// The user id, if set.
    pub fn user_id(&self) -> Option<&str> {
        self.get(USER_ID)
    }

    /// A value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.values.get(key).map(String::as_str)
    }

    /// All key/values (the user id included), sorted by key.
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A copy with `key` set to `value`.
    pub fn with(&self, key: &str, value: impl Into<String>) -> Result<Self, ContextError> {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
            return Err(ContextError::InvalidKey(key.to_owned()));
        }
        let mut values = self.0.values.clone();
        values.insert(key.to_owned(), value.into());
        let bytes: usize = values.iter().map(|(k, v)| k.len() + v.len()).sum();
        if values.len() > VALUES_MAX || bytes > VALUE_BYTES_MAX {
            return Err(ContextError::TooLarge(format!(
                "{} values of {bytes} bytes (at most {VALUES_MAX} values, {VALUE_BYTES_MAX} bytes)",
                values.len()
            )));
        }
        Ok(Self::from_parts(self.0.trace_id, self.0.span_id, self.0.sampled, values))
    }

    /// A copy with the user id set.
    pub fn with_user_id(&self, user_id: impl Into<String>) -> Result<Self, ContextError> {
        self.with(USER_ID, user_id)
    }

    /// The same trace and values under a new span id (a hop's own span).
    pub fn child(&self, rt: &crate::rt::Rt) -> Self {
        let span_id = rt.with_rng(rand::Rng::random::<u64>).max(1);
        Self::from_parts(self.0.trace_id, span_id, self.0.sampled, self.0.values.clone())
    }

    /// The W3C headers (`traceparent`, and `baggage` if there are values),
    /// written by the OpenTelemetry propagators.
    pub fn to_headers(&self) -> &[(String, String)] {
        self.0.headers.get_or_init(|| {
            let span = SpanContext::new(
                TraceId::from_bytes(self.0.trace_id.to_be_bytes()),
                SpanId::from_bytes(self.0.span_id.to_be_bytes()),
                if self.0.sampled { TraceFlags::SAMPLED } else { TraceFlags::NOT_SAMPLED },
                true,
                TraceState::NONE,
            );
            let mut baggage = Baggage::new();
            for (k, v) in &self.0.values {
                baggage.insert(k.clone(), v.clone());
            }
            let cx = opentelemetry::Context::new().with_remote_span_context(span).with_baggage(baggage);
            let mut headers = Headers::default();
            TraceContextPropagator::new().inject_context(&cx, &mut headers);
            BaggagePropagator::new().inject_context(&cx, &mut headers);
            headers.0
        })
    }

    /// Reads a context from W3C headers (the inverse of [`Context::to_headers`]).
    pub fn from_headers(headers: &[(String, String)]) -> Result<Self, ContextError> {
        let carrier = Headers(headers.to_vec());
        let cx = TraceContextPropagator::new().extract(&carrier);
        let cx = BaggagePropagator::new().extract_with_context(&cx, &carrier);
        let span = cx.span().span_context().clone();
        if !span.is_valid() {
            return Err(ContextError::NoTraceparent);
        }
        let values: BTreeMap<String, String> = cx.baggage().iter().map(|(k, (v, _))| (k.to_string(), v.to_string())).collect();
        if values.len() > VALUES_MAX {
            return Err(ContextError::TooLarge(format!("{} values", values.len())));
        }
        let trace_id = u128::from_be_bytes(span.trace_id().to_bytes());
        let span_id = u64::from_be_bytes(span.span_id().to_bytes());
        let ctx = Self::from_parts(trace_id, span_id, span.is_sampled(), values);
        // Keep the headers as received: forwarding them costs nothing.
        let _ = ctx.0.headers.set(headers.to_vec());
        Ok(ctx)
    }

    /// A `tracing` span carrying the trace id, span id and user id.
    pub fn span(&self, name: &'static str) -> tracing::Span {
        tracing::info_span!("context", op = name, trace_id = %self.trace_id(), span_id = %self.span_id(), user_id = self.user_id().unwrap_or(""))
    }
}

/// A header carrier for the propagators.
#[derive(Default)]
struct Headers(Vec<(String, String)>);

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_owned(), value));
    }
}

impl Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

// The slot holds one strong count of the current context's `Arc`, as a raw
// pointer: a `Cell` of a pointer has no destructor, so reading the slot is a
// plain thread-local load (a slot of `Option<Context>` would need lazy
// destructor registration on every access, measurably slower on the
// message path). Every scope restores what it replaced, so the slot is
// empty between task polls; a thread that ends with a context set leaks
// that one count.
thread_local! {
    static CURRENT: Cell<*const Inner> = const { Cell::new(std::ptr::null()) };
}

fn into_raw(ctx: Option<Context>) -> *const Inner {
    ctx.map_or(std::ptr::null(), |c| Arc::into_raw(c.0))
}

/// # Safety
/// `p` is null or came from `into_raw`, and its count is handed over.
unsafe fn from_raw(p: *const Inner) -> Option<Context> {
    // SAFETY: per the contract, `p` carries one strong count of a live Arc.
    (!p.is_null()).then(|| Context(unsafe { Arc::from_raw(p) }))
}

/// Whether a context is set (one thread-local load).
#[inline]
pub(crate) fn is_set() -> bool {
    !CURRENT.get().is_null()
}

/// The context of the running work, if any.
#[inline]
pub fn current() -> Option<Context> {
    let p = CURRENT.get();
    if p.is_null() {
        return None;
    }
    // SAFETY: the slot holds a strong count of `p`'s Arc, alive while it is
    // there; we take a second count for the returned handle.
    unsafe {
        Arc::increment_strong_count(p);
        from_raw(p)
    }
}

/// Replaces the current context (for the running task's current poll; a
/// process keeps it across polls). Returns the previous one.
#[inline]
pub(crate) fn replace(ctx: Option<Context>) -> Option<Context> {
    let old = CURRENT.replace(into_raw(ctx));
    // SAFETY: what the slot held came from `into_raw`, with its count.
    unsafe { from_raw(old) }
}

/// Runs `fut` with `ctx` as the current context.
pub fn with_global_context<F: Future>(ctx: Context, fut: F) -> WithContext<F> {
    WithContext { slot: Some(ctx), fut }
}

/// Runs `f` with `ctx` as the current context.
pub fn with_global_context_sync<R>(ctx: Context, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Context>);
    impl Drop for Restore {
        fn drop(&mut self) {
            replace(self.0.take());
        }
    }
    let _restore = Restore(replace(Some(ctx)));
    f()
}

/// A future run inside a context (see [`with_global_context`]).
pub struct WithContext<F> {
    slot: Option<Context>,
    fut: F,
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        // SAFETY: `fut` is structurally pinned (never moved out); `slot` is
        // not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        struct Swap<'a>(&'a mut Option<Context>, Option<Context>);
        impl Drop for Swap<'_> {
            fn drop(&mut self) {
                // What the future left as current stays with it for its next poll.
                *self.0 = replace(self.1.take());
            }
        }
        let outer = replace(this.slot.take());
        let _swap = Swap(&mut this.slot, outer);
        fut.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_the_w3c_propagators() {
        let ctx = Context::new(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c).with_user_id("test user/ü").unwrap().with("hop", "3").unwrap();
        let headers = ctx.to_headers().to_vec();
        let traceparent = &headers.iter().find(|(k, _)| k == "traceparent").expect("traceparent").1;
        assert!(traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{traceparent}");
        assert!(headers.iter().any(|(k, v)| k == "baggage" && v.contains("hop=3")), "{headers:?}");
        let back = Context::from_headers(&headers).expect("reads back");
        assert_eq!(back, ctx);
        assert_eq!(back.user_id(), Some("test user/ü"));
        assert_eq!(Context::from_headers(&[("traceparent".into(), "garbage".into())]), Err(ContextError::NoTraceparent));
        assert!(matches!(ctx.with("bad key", "x"), Err(ContextError::InvalidKey(_))));
        assert!(matches!(ctx.with("big", "x".repeat(VALUE_BYTES_MAX)), Err(ContextError::TooLarge(_))));
    }

    /// Records the fields of every span opened.
    struct Recorder(std::sync::Mutex<Vec<(String, String)>>);

    impl tracing::Subscriber for Recorder {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            struct Visit<'a>(&'a mut Vec<(String, String)>);
            impl tracing::field::Visit for Visit<'_> {
                fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                    self.0.push((field.name().to_owned(), format!("{value:?}")));
                }
                fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                    self.0.push((field.name().to_owned(), value.to_owned()));
                }
            }
            span.record(&mut Visit(&mut self.0.lock().unwrap()));
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn a_context_opens_a_tracing_span_with_its_ids() {
        let ctx = Context::new(0xfeed).with_user_id("u7").unwrap();
        let recorder = std::sync::Arc::new(Recorder(std::sync::Mutex::new(Vec::new())));
        tracing::subscriber::with_default(recorder.clone(), || drop(ctx.span("rpc")));
        let fields = recorder.0.lock().unwrap().clone();
        for (k, v) in [("op", "rpc"), ("trace_id", ctx.trace_id().as_str()), ("span_id", ctx.span_id().as_str()), ("user_id", "u7")] {
            assert!(fields.iter().any(|(fk, fv)| fk == k && fv == v), "{k}={v} not in {fields:?}");
        }
    }

    #[test]
    fn current_follows_scopes_and_awaits() {
        assert_eq!(current(), None);
        let outer = Context::new(1);
        let inner = Context::new(2);
        with_global_context_sync(outer.clone(), || {
            assert_eq!(current().as_ref(), Some(&outer));
            with_global_context_sync(inner.clone(), || assert_eq!(current().as_ref(), Some(&inner)));
            assert_eq!(current().as_ref(), Some(&outer));
        });
        assert_eq!(current(), None);
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let task = crate::rt::spawn(with_global_context(outer.clone(), async move {
                tokio::task::yield_now().await;
                let seen = current();
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                (seen, current())
            }));
            // Other work on the same thread does not see it.
            tokio::task::yield_now().await;
            assert_eq!(current(), None);
            let (a, b) = task.await.unwrap();
            assert_eq!((a.as_ref(), b.as_ref()), (Some(&outer), Some(&outer)));
        });
    }
}
