//! The binary's log: a `tracing` subscriber writing to stderr, one line per
//! event, filtered by `RUST_LOG` (default `info`), as text or as JSON lines
//! (`--log-format json`).
//!
//! JSON lines are written by [`JsonLines`] (an object per line: `timestamp`,
//! `level`, `target`, `message`, the event's other fields under `fields`,
//! the names of its spans under `spans`), which keeps `tracing-subscriber`'s
//! `json` feature, and its serde dependencies, out of the build.
//!
//! Only `foundation node` logs by default: the other commands, which print
//! their own progress and reports, log only when `RUST_LOG` is set.

use std::fmt;

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, fmt as sub_fmt};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL target: message key=value ...`
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter when `RUST_LOG` is unset: info, but openraft's own info lines
/// (state dumps at every start and election) only from warn; the
/// member's leader, term and snapshot lines come from `consensus::observe`.
const LEVEL_DEFAULT: &str = "info,openraft=warn";

/// Installs the subscriber: always for `node` (at `RUST_LOG`, else info),
/// for the other commands only when `RUST_LOG` is set. A `RUST_LOG` that
/// does not parse falls back to the default, with one warning line.
pub fn install(format: LogFormat, node: bool) {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    if from_env.is_none() && !node {
        return;
    }
    let (filter, bad) = match from_env.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (EnvFilter::new(LEVEL_DEFAULT), Some(e.to_string())),
        None => (EnvFilter::new(LEVEL_DEFAULT), None),
    };
    let builder = sub_fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
    if let (Ok(()), Some(e)) = (installed, bad) {
        tracing::warn!(error = %e, "RUST_LOG does not parse; logging at {LEVEL_DEFAULT}: set it to e.g. `info` or `foundation_cluster=debug`");
    }
}

/// Writes each event as one JSON object on one line.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans: Vec<serde_json::Value> =
            ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()).map(|span| span.name().into()).collect();
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("message".into(), fields.message.unwrap_or_default().into());
        if !fields.rest.is_empty() {
            line.insert("fields".into(), fields.rest.into());
        }
        if !spans.is_empty() {
            line.insert("spans".into(), spans.into());
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

/// An event's fields: its message, and the others by name.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = Some(value.as_str().map_or_else(|| value.to_string(), str::to_owned));
        } else {
            self.rest.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_parse_and_carry_the_fields() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = sub_fmt().with_writer(move || out.clone()).event_format(JsonLines).finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("serve");
            let _in = span.enter();
            tracing::info!(node = "n1", term = 3u64, quote = "a \"quoted\"\nline", "leader changed");
        });
        let text = String::from_utf8(buffer.0.lock().expect("not poisoned").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON");
        assert_eq!((v["level"].as_str(), v["message"].as_str()), (Some("INFO"), Some("leader changed")));
        assert_eq!((v["fields"]["node"].as_str(), v["fields"]["term"].as_u64()), (Some("n1"), Some(3)));
        assert_eq!(v["fields"]["quote"].as_str(), Some("a \"quoted\"\nline"));
        assert_eq!(v["spans"][0].as_str(), Some("serve"));
        assert!(v["timestamp"].as_str().is_some_and(|t| t.contains('T')), "{text}");
    }
}
