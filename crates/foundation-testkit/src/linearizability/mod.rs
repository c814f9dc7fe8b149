//! A linearizability checker for key/value register histories (WGL search
//! with memoization, split per key: P-compositionality).
//!
//! # History format
//! JSON Lines: one operation event per line (blank lines and lines starting
//! with `#` are skipped), as Jepsen records them:
//!
//! ```text
//! {"process": 1, "type": "invoke", "f": "write", "key": "x", "value": 1, "time": 0}
//! {"process": 1, "type": "ok",     "f": "write", "key": "x", "value": 1, "time": 5}
//! {"process": 2, "type": "invoke", "f": "read",  "key": "x",               "time": 1}
//! {"process": 2, "type": "ok",     "f": "read",  "key": "x", "value": 1, "time": 6}
//! {"process": 3, "type": "invoke", "f": "cas",   "key": "x", "value": [1, 2], "time": 7}
//! {"process": 3, "type": "info",   "f": "cas",   "key": "x", "value": [1, 2], "time": 9}
//! ```
//!
//! - `type`: `invoke`, then one completion by the same process: `ok` (it
//!   happened, between the two times), `fail` (it did not happen), or `info`
//!   (unknown: it may take effect at any time after its invoke, or never).
//!   An invoke without a completion counts as `info`.
//! - `f`: `read` (the `ok` carries the value read; `null` is absent),
//!   `write` (`value`), `cas` (`value: [expected, new]`).
//! - Values are integers or `null`; `time` is any non-decreasing number
//!   (nanoseconds, say). A process has at most one operation open at a time.
//!
//! A malformed line is an error that names it.

mod check;
mod history;

pub use check::{CheckResult, Verdict, check, check_history};
pub use history::{HistoryError, Op, OpKind, parse_history};
