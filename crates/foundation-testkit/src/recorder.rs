//! Recording histories: invoke/ok/fail/info events with times and process
//! ids, written in the JSON Lines format that
//! [`crate::linearizability`] reads (see its module docs).

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::linearizability::{HistoryError, Op, parse_history};

/// An event's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation starts.
    Invoke,
    /// It happened (between its invoke and now).
    Ok,
    /// It did not happen.
    Fail,
    /// Unknown: it may take effect at any time after its invoke, or never.
    Info,
}

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Func {
    /// Reads a key.
    Read,
    /// Writes a key.
    Write,
    /// Compare-and-set on a key.
    Cas,
    /// A message round trip through a node's processes (the message
    /// workload; the key is the node, the value the payload size). Not a
    /// register operation: the linearizability checker refuses it.
    Echo,
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The client process.
    pub process: u64,
    /// invoke, ok, fail or info.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation.
    pub f: Func,
    /// The key.
    pub key: String,
    /// Write: the value; cas: `[expected, new]`; read: the value read (on
    /// `ok`); absent otherwise.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub value: serde_json::Value,
    /// Microseconds since the recorder started (virtual under simulation).
    pub time: u64,
}

/// A shared, append-only history. Cheap to clone.
///
/// Times are taken under the lock, so the events are in time order.
#[derive(Clone, Debug)]
pub struct Recorder {
    inner: Arc<Mutex<Vec<Event>>>,
    start: Instant,
    limit: usize,
}

/// Events a recorder keeps by default; past it, [`Recorder::record`]
/// refuses (and the workload stops issuing operations).
pub const EVENTS_MAX: usize = 1_000_000;

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty history starting now.
    pub fn new() -> Self {
        Self { inner: Arc::default(), start: Instant::now(), limit: EVENTS_MAX }
    }

    /// Microseconds since the start.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Appends an event stamped now; `false` when the history is full.
    pub fn record(&self, process: u64, kind: EventType, f: Func, key: &str, value: serde_json::Value) -> bool {
        let mut events = self.inner.lock();
        if events.len() >= self.limit {
            return false;
        }
        let time = self.now_us();
        events.push(Event { process, kind, f, key: key.to_owned(), value, time });
        true
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.inner.lock().clone()
    }

    /// A copy of the events from the `from`-th on (a reader that follows
    /// a history as it grows copies each event once).
    pub fn events_from(&self, from: usize) -> Vec<Event> {
        let events = self.inner.lock();
        events.get(from..).map(<[Event]>::to_vec).unwrap_or_default()
    }

    /// Events recorded so far.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The history as JSON Lines (what `foundation check` reads).
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for e in self.inner.lock().iter() {
            out.push_str(&serde_json::to_string(e).expect("events serialize"));
            out.push('\n');
        }
        out
    }

    /// The history paired into operations, for the checker.
    pub fn ops(&self) -> Result<Vec<Op>, HistoryError> {
        parse_history(&self.to_jsonl())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::{Verdict, check};
    use serde_json::json;

    #[tokio::test(start_paused = true)]
    async fn a_recorded_history_reads_back_and_checks() {
        let r = Recorder::new();
        r.record(1, EventType::Invoke, Func::Write, "x", json!(1));
        tokio::time::advance(std::time::Duration::from_millis(2)).await;
        r.record(1, EventType::Ok, Func::Write, "x", json!(1));
        r.record(2, EventType::Invoke, Func::Read, "x", serde_json::Value::Null);
        r.record(2, EventType::Ok, Func::Read, "x", json!(1));
        let text = r.to_jsonl();
        assert!(text.starts_with(r#"{"process":1,"type":"invoke","f":"write","key":"x","value":1,"time":0}"#), "{text}");
        let ops = r.ops().expect("parses");
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].ret, Some(2000));
        assert_eq!(check(&ops).verdict, Verdict::Linearizable);
    }
}
