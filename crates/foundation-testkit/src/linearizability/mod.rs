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
//!
//! # The check, within limits
//! [`check_with`] always answers within its [`Limits`] (memory for the
//! search's states, default 1 GiB; time, default 60 s): linearizable, not
//! linearizable (the operation no order explains, why, and a window around
//! it), or [`Verdict::Unknown`] (the limit reached and the window the
//! search was working on). How it stays fast:
//! - each key is checked on its own (P-compositionality);
//! - an unknown outcome may take effect only before the last operation
//!   that could observe it returns, or never ([`prepare`](self) has the
//!   proof); one that nothing observes is dropped, so unknown outcomes do
//!   not stay open to the end of the history;
//! - a read (or a compare-and-set's expectation) that no write can supply,
//!   because every write of its value was overwritten before it or came
//!   after it, fails at once, before any search;
//! - the search remembers each state it entered as a 128-bit hash of the
//!   operations done and the value (16 bytes each), so the work after a
//!   quiescent point, where no operation is open, is done once per value
//!   reaching it, and memory is counted against the limit.
//!
//! [`plant`](plant::plant) breaks a history on purpose (the tests check
//! that every kind of planted bug is caught) and [`simulate`](plant::simulate)
//! records a correct register of any size (the `check.*` benches).

mod check;
#[doc(hidden)]
pub mod fuzzing;
mod history;
pub mod plant;
mod prepare;
mod search;

pub use check::{CheckResult, Limit, Limits, Verdict, check, check_history, check_with};
pub use history::{HistoryError, LINE_BYTES_MAX, Op, OpKind, parse_history, parse_history_reader, write_history};
