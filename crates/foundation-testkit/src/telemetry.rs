//! `capture_telemetry`: record the telemetry events a test provokes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use foundation_cluster::services::{HandlerId, Telemetry};
use parking_lot::Mutex;

/// One captured event.
#[derive(Clone, Debug, PartialEq)]
pub struct CapturedEvent {
    /// Its name.
    pub event: String,
    /// Its measurements.
    pub measurements: BTreeMap<String, f64>,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
}

/// Events captured from a [`Telemetry`] hub while this lives (dropping it
/// detaches the handler).
#[must_use = "the capture ends when it is dropped"]
pub struct TelemetryCapture {
    telemetry: Telemetry,
    id: HandlerId,
    events: Arc<Mutex<Vec<CapturedEvent>>>,
}

/// Captures the events of `telemetry` whose names start with `prefix`.
pub fn capture_telemetry(telemetry: &Telemetry, prefix: &str) -> TelemetryCapture {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let id = telemetry.attach(prefix, move |event, measurements, metadata| {
        sink.lock().push(CapturedEvent { event: event.to_owned(), measurements: measurements.clone(), metadata: metadata.clone() });
    });
    TelemetryCapture { telemetry: telemetry.clone(), id, events }
}

impl TelemetryCapture {
    /// The events captured so far, in order.
    pub fn events(&self) -> Vec<CapturedEvent> {
        self.events.lock().clone()
    }

    /// Waits until an event named `event` was captured (at most `timeout`).
    pub async fn wait_for(&self, event: &str, timeout: Duration) -> Option<CapturedEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.events.lock().iter().find(|e| e.event == event) {
                return Some(e.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TelemetryCapture {
    fn drop(&mut self) {
        self.telemetry.detach(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_matching_events_until_dropped() {
        let t = Telemetry::new();
        let capture = capture_telemetry(&t, "db.");
        t.emit("db.query", &BTreeMap::from([("ms".to_owned(), 2.0)]), &BTreeMap::new());
        t.emit("http.get", &BTreeMap::new(), &BTreeMap::new());
        let got = capture.wait_for("db.query", Duration::from_secs(1)).await.expect("captured");
        assert_eq!(got.measurements.get("ms"), Some(&2.0));
        assert_eq!(capture.events().len(), 1);
        drop(capture);
        let again = capture_telemetry(&t, "db.");
        assert!(again.events().is_empty(), "a new capture starts empty");
    }
}
