//! The event store (Foundation 1.x's `Events` service): a node's record of
//! what happened, queryable by correlation id, by time range and by kind.
//!
//! Retention is bounded: the store keeps the newest `capacity` events and
//! counts the ones it let go. Times are milliseconds since the Unix epoch,
//! given by the caller (from `Rt::system_time`, so simulation controls them).

use std::collections::{BTreeMap, VecDeque};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Events kept by default.
pub const EVENTS_DEFAULT: usize = 10_000;

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing within the store.
    pub id: u64,
    /// When (milliseconds since the Unix epoch).
    pub time_ms: u64,
    /// What kind of event (`"node.up"`, `"kv.put"`, ...).
    pub kind: String,
    /// Ties events of one piece of work together (a trace id, a request id).
    pub correlation_id: Option<String>,
    /// Details.
    pub data: BTreeMap<String, String>,
}

/// Which events a query wants (all conditions must hold).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// At or after this time.
    pub since_ms: Option<u64>,
    /// Before this time.
    pub until_ms: Option<u64>,
    /// At most this many, the newest (default: all that match).
    pub limit: Option<usize>,
}

/// A bounded, queryable event store. Cheap to share behind an `Arc`.
pub struct EventStore {
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    events: VecDeque<Event>,
    next_id: u64,
    dropped: u64,
}

impl EventStore {
    /// A store that keeps the newest `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), inner: Mutex::new(Inner { events: VecDeque::new(), next_id: 1, dropped: 0 }) }
    }

    /// Records an event; returns its id.
    pub fn store(&self, time_ms: u64, kind: &str, correlation_id: Option<&str>, data: BTreeMap<String, String>) -> u64 {
        let mut inner = self.inner.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        if inner.events.len() == self.capacity {
            inner.events.pop_front();
            inner.dropped += 1;
        }
        inner.events.push_back(Event { id, time_ms, kind: kind.to_owned(), correlation_id: correlation_id.map(str::to_owned), data });
        id
    }

    /// The events matching `filter`, oldest first.
    pub fn query(&self, filter: &EventFilter) -> Vec<Event> {
        let inner = self.inner.lock();
        let matching = inner.events.iter().filter(|e| {
            filter.correlation_id.as_ref().is_none_or(|c| e.correlation_id.as_ref() == Some(c))
                && filter.kind.as_ref().is_none_or(|k| &e.kind == k)
                && filter.since_ms.is_none_or(|s| e.time_ms >= s)
                && filter.until_ms.is_none_or(|u| e.time_ms < u)
        });
        let mut out: Vec<Event> = matching.cloned().collect();
        if let Some(limit) = filter.limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        out
    }

    /// The newest `n` events, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Event> {
        self.query(&EventFilter { limit: Some(n), ..EventFilter::default() })
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.inner.lock().events.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events let go to keep within the capacity.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_by_correlation_time_and_kind_with_bounded_retention() {
        let store = EventStore::new(3);
        store.store(10, "a", Some("r1"), BTreeMap::new());
        store.store(20, "b", Some("r2"), BTreeMap::new());
        store.store(30, "a", Some("r1"), BTreeMap::new());
        let by_corr = store.query(&EventFilter { correlation_id: Some("r1".into()), ..Default::default() });
        assert_eq!(by_corr.iter().map(|e| e.time_ms).collect::<Vec<_>>(), [10, 30]);
        let range = store.query(&EventFilter { since_ms: Some(15), until_ms: Some(30), ..Default::default() });
        assert_eq!(range.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["b"]);
        store.store(40, "c", None, BTreeMap::new());
        assert_eq!(store.len(), 3, "bounded");
        assert_eq!(store.dropped(), 1);
        assert_eq!(store.recent(2).iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4]);
    }
}
