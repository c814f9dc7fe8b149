//! Entry point of the `history` fuzz target (`fuzz/`) and of its replay on
//! stable (`tests/fuzz_corpus.rs`). Not an API.

use std::time::Duration;

use super::{Limits, check_with, parse_history_reader};

/// A real history line, the seed of the corpus (a write, a read of it).
pub const SEED: &str = concat!(
    "{\"process\": 1, \"type\": \"invoke\", \"f\": \"write\", \"key\": \"x\", \"value\": 1, \"time\": 0}\n",
    "{\"process\": 2, \"type\": \"invoke\", \"f\": \"read\", \"key\": \"x\", \"time\": 1}\n",
    "{\"process\": 1, \"type\": \"ok\", \"f\": \"write\", \"key\": \"x\", \"value\": 1, \"time\": 5}\n",
    "{\"process\": 2, \"type\": \"ok\", \"f\": \"read\", \"key\": \"x\", \"value\": 1, \"time\": 6}\n",
    "# an unknown outcome\n",
    "{\"process\": 3, \"type\": \"invoke\", \"f\": \"cas\", \"key\": \"x\", \"value\": [1, 2], \"time\": 7}\n",
    "{\"process\": 3, \"type\": \"info\", \"f\": \"cas\", \"key\": \"x\", \"value\": [1, 2], \"time\": 9}\n",
);

/// `data` as a JSON Lines history for `foundation check`: parsed, and
/// what parses is checked within small limits. Either may refuse; neither
/// may panic or run past its limits.
pub fn history(data: &[u8]) {
    if let Ok(ops) = parse_history_reader(data) {
        let _ = check_with(&ops, Limits { memory_bytes: 1 << 20, time: Duration::from_millis(200) });
    }
}
