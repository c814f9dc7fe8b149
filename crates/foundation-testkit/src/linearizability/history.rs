//! Reading histories: JSON Lines events paired into operations.

use std::collections::BTreeMap;

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
    let mut open: BTreeMap<u64, (Op, String)> = BTreeMap::new();
    let mut done = Vec::new();
    let mut last_time = 0u64;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |reason: String| HistoryError { line, reason };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let e: Event = serde_json::from_str(trimmed).map_err(|e| err(format!("not a history event: {e}")))?;
        if e.time < last_time {
            return Err(err(format!("time {} goes back (the previous event was at {last_time})", e.time)));
        }
        last_time = e.time;
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
                if let Some((prev, _)) = open.get(&e.process) {
                    return Err(err(format!("process {} invokes again while its operation from line {} is open", e.process, prev.line)));
                }
                let op = Op { process: e.process, key: e.key.clone(), kind, call: e.time, ret: None, line };
                open.insert(e.process, (op, e.f.clone()));
            }
            completion @ ("ok" | "fail" | "info") => {
                let Some((mut op, f)) = open.remove(&e.process) else {
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
                        done.push(op);
                    }
                    // A read of unknown outcome constrains nothing.
                    "info" if !matches!(op.kind, OpKind::Read(_)) => done.push(op),
                    _ => {} // fail: it did not happen (or an unknown read)
                }
            }
            other => return Err(err(format!("unknown type {other:?}: use invoke, ok, fail or info"))),
        }
    }
    // Still open at the end: unknown outcome (reads constrain nothing).
    done.extend(open.into_values().map(|(op, _)| op).filter(|op| !matches!(op.kind, OpKind::Read(_))));
    done.sort_by_key(|op| (op.call, op.line));
    Ok(done)
}
