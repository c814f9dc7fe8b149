//! Reading histories: JSON Lines events paired into operations.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Read};

use serde::Deserialize;

/// What an operation does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Reads the value (the result is what it saw).
    Read(Option<i64>),
    /// Writes a value.
    Write(Option<i64>),
    /// Sets `new` if the value is `expected`.
    Cas(Option<i64>, Option<i64>),
}

/// One operation, paired from its invoke and completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The client process.
    pub process: u64,
    /// The key.
    pub key: String,
    /// What it did.
    pub kind: OpKind,
    /// When it was invoked.
    pub call: u64,
    /// When it completed; `None` for an unknown outcome (`info`).
    pub ret: Option<u64>,
    /// The line of its invoke (for reports).
    pub line: usize,
}

/// Why a history could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct HistoryError {
    /// The 1-based line.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    process: u64,
    #[serde(rename = "type")]
    kind: String,
    f: String,
    key: String,
    #[serde(default)]
    value: serde_json::Value,
    time: u64,
}

fn int(v: &serde_json::Value) -> Result<Option<i64>, String> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => n.as_i64().map(Some).ok_or_else(|| format!("{n} is not a 64-bit integer")),
        other => Err(format!("values are integers or null, not {other}")),
    }
}

/// Parses a JSON Lines history into operations (failed ones dropped: they
/// did not happen), in invoke order.
pub fn parse_history(text: &str) -> Result<Vec<Op>, HistoryError> {
    parse_history_reader(text.as_bytes())
}

/// [`parse_history`] from a reader, a line at a time (a history file is
/// never held whole in memory). A line longer than [`LINE_BYTES_MAX`] is an
/// error.
pub fn parse_history_reader(mut reader: impl BufRead) -> Result<Vec<Op>, HistoryError> {
    let mut parser = Parser::default();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        line += 1;
        let n = reader
            .by_ref()
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| HistoryError { line, reason: format!("cannot read: {e}") })?;
        if n == 0 {
            break;
        }
        if buf.len() > LINE_BYTES_MAX && buf.last() != Some(&b'\n') {
            return Err(HistoryError { line, reason: format!("the line is longer than {LINE_BYTES_MAX} bytes") });
        }
        let raw = std::str::from_utf8(&buf).map_err(|_| HistoryError { line, reason: "not UTF-8".into() })?;
        parser.line(line, raw)?;
    }
    Ok(parser.finish())
}

/// The longest history line accepted (an event is under 200 bytes).
pub const LINE_BYTES_MAX: usize = 64 * 1024;

#[derive(Default)]
struct Parser {
    open: BTreeMap<u64, (Op, String)>,
    done: Vec<Op>,
    last_time: u64,
}

impl Parser {
    fn line(&mut self, line: usize, raw: &str) -> Result<(), HistoryError> {
        let err = |reason: String| HistoryError { line, reason };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return Ok(());
        }
        let e: Event = serde_json::from_str(trimmed).map_err(|e| err(format!("not a history event: {e}")))?;
        if e.time < self.last_time {
            return Err(err(format!("time {} goes back (the previous event was at {}): events are in time order", e.time, self.last_time)));
        }
        self.last_time = e.time;
        let kind = match (e.f.as_str(), e.kind.as_str()) {
            ("read", "invoke") => OpKind::Read(None),
            ("read", _) => OpKind::Read(int(&e.value).map_err(err)?),
            ("write", _) => OpKind::Write(int(&e.value).map_err(err)?),
            ("cas", _) => match e.value.as_array().map(Vec::as_slice) {
                Some([a, b]) => OpKind::Cas(int(a).map_err(err)?, int(b).map_err(err)?),
                _ => return Err(err("a cas value is [expected, new]".into())),
            },
            (f, _) => return Err(err(format!("unknown f {f:?}: use read, write or cas"))),
        };
        match e.kind.as_str() {
            "invoke" => {
                if let Some((prev, _)) = self.open.get(&e.process) {
                    return Err(err(format!("process {} invokes again while its operation from line {} is open", e.process, prev.line)));
                }
                let op = Op { process: e.process, key: e.key, kind, call: e.time, ret: None, line };
                self.open.insert(e.process, (op, e.f));
            }
            completion @ ("ok" | "fail" | "info") => {
                let Some((mut op, f)) = self.open.remove(&e.process) else {
                    return Err(err(format!("process {} completes an operation it did not invoke", e.process)));
                };
                if f != e.f || op.key != e.key {
                    return Err(err(format!(
                        "the completion ({} {}) does not match the invoke on line {} ({f} {})",
                        e.f, e.key, op.line, op.key
                    )));
                }
                match completion {
                    "ok" => {
                        op.ret = Some(e.time);
                        if let OpKind::Read(_) = op.kind {
                            op.kind = kind;
                        }
                        self.done.push(op);
                    }
                    // A read of unknown outcome constrains nothing.
                    "info" if !matches!(op.kind, OpKind::Read(_)) => self.done.push(op),
                    _ => {} // fail: it did not happen (or an unknown read)
                }
            }
            other => return Err(err(format!("unknown type {other:?}: use invoke, ok, fail or info"))),
        }
        Ok(())
    }

    fn finish(self) -> Vec<Op> {
        let mut done = self.done;
        // Still open at the end: unknown outcome (reads constrain nothing).
        done.extend(self.open.into_values().map(|(op, _)| op).filter(|op| !matches!(op.kind, OpKind::Read(_))));
        done.sort_by_key(|op| (op.call, op.line));
        done
    }
}

/// Writes operations back as a JSON Lines history (invokes and completions
/// in time order; an operation without `ret` ends in `info`). Each
/// operation's process must have no other operation open meanwhile.
pub fn write_history(ops: &[Op]) -> String {
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret.unwrap_or(u64::MAX), true, i));
    }
    // At one time, completions first: an operation that ends when another
    // starts did not overlap it.
    events.sort_by_key(|&(t, done, i)| (t, !done, i));
    let last = ops.iter().filter_map(|o| o.ret).chain(ops.iter().map(|o| o.call)).max().unwrap_or(0);
    let value = |v: Option<i64>| v.map_or("null".to_owned(), |v| v.to_string());
    let mut out = String::with_capacity(ops.len() * 160);
    for (time, done, i) in events {
        let op = &ops[i];
        let (f, v) = match op.kind {
            OpKind::Read(v) => ("read", done.then(|| value(v))),
            OpKind::Write(v) => ("write", Some(value(v))),
            OpKind::Cas(a, b) => ("cas", Some(format!("[{}, {}]", value(a), value(b)))),
        };
        let kind = match (done, op.ret) {
            (false, _) => "invoke",
            (true, Some(_)) => "ok",
            (true, None) => "info",
        };
        let time = if time == u64::MAX { last } else { time };
        let key = serde_json::to_string(&op.key).unwrap_or_default();
        let v = v.map_or(String::new(), |v| format!(r#", "value": {v}"#));
        let _ = writeln!(out, r#"{{"process": {}, "type": "{kind}", "f": "{f}", "key": {key}{v}, "time": {time}}}"#, op.process);
    }
    out
}
