//! What the bytes past the log's end are: zeros, a write that did not
//! finish, or damage to refuse (see the module docs of `log_file`).

use std::io;
use std::os::unix::fs::FileExt;

use super::{BATCH_WRITE_MAX, LogFile, RECORD_HEADER, RECORD_MAX, RecordHeader, SEQ_AHEAD_MAX, check, corrupt, parse_body};

impl LogFile {
    /// Decides what the bytes past the log's end are (see the module docs).
    pub(super) fn after_end(&mut self, end: u64, last_seq: Option<u64>, bad: Option<RecordHeader>) -> io::Result<()> {
        // Read in chunks, each with the 19 bytes before it, so a record's
        // header across two chunks is seen whole.
        const CHUNK: usize = 1 << 20;
        let mut buf = vec![0u8; RECORD_HEADER - 1 + CHUNK];
        let mut last_nonzero = None;
        let mut at = end;
        while at < self.len {
            let n = (self.len - at).min(CHUNK as u64) as usize;
            let carry = RECORD_HEADER - 1;
            self.file.read_exact_at(&mut buf[carry..carry + n], at)?;
            let chunk = &buf[..carry + n];
            if let Some(p) = chunk[carry..].iter().rposition(|&b| b != 0) {
                last_nonzero = Some(at + p as u64);
                // Every place a record's header could start.
                for p in 0..chunk.len().saturating_sub(RECORD_HEADER - 1) {
                    let start = (at + p as u64).wrapping_sub(carry as u64);
                    let h = &chunk[p..p + RECORD_HEADER];
                    if start > end && start < self.len && h.iter().any(|&b| b != 0) {
                        self.later_batch(start, last_seq, h)?;
                    }
                }
            }
            buf.copy_within(n..n + carry, 0);
            at += n as u64;
        }
        let Some(last_nonzero) = last_nonzero else { return Ok(()) };
        if let Some(bad) = bad
            && bad.len as usize <= RECORD_MAX
            && end + RECORD_HEADER as u64 + u64::from(bad.len) > self.len
            && last_seq.is_none_or(|s| bad.seq == s || bad.seq == s + 1)
        {
            return Err(corrupt(&self.path, format!("it ends inside the record at byte {end}: the file was cut short")));
        }
        let longest = bad.filter(|b| b.len as usize <= RECORD_MAX).map_or(0, |b| RECORD_HEADER + b.len as usize).max(BATCH_WRITE_MAX);
        if last_nonzero - end >= longest as u64 {
            return Err(corrupt(
                &self.path,
                format!("the record at byte {end} is damaged, and {} bytes follow it: more than one unfinished write", last_nonzero - end),
            ));
        }
        tracing::warn!(file = %self.path.display(), at = end, bytes = last_nonzero + 1 - end, "the Raft log ends in a write that did not finish (never acknowledged): it is discarded");
        self.torn = Some(last_nonzero + 1);
        Ok(())
    }

    /// Refuses the file when a whole record of a batch two or more after
    /// the last whole one starts at `start`: the damaged record before it
    /// had been acknowledged.
    fn later_batch(&self, start: u64, last_seq: Option<u64>, h: &[u8]) -> io::Result<()> {
        let rh = RecordHeader::parse(h);
        let plausible = rh.len as usize <= RECORD_MAX
            && start + RECORD_HEADER as u64 + u64::from(rh.len) <= self.len
            && last_seq.is_none_or(|s| rh.seq >= s + 2 && rh.seq - s < SEQ_AHEAD_MAX);
        if !plausible {
            return Ok(());
        }
        let mut body = vec![0u8; rh.len as usize];
        self.file.read_exact_at(&mut body, start + RECORD_HEADER as u64)?;
        if check(rh.len, rh.seq, &body) != rh.check || parse_body(&body).is_none() {
            return Ok(());
        }
        Err(corrupt(
            &self.path,
            format!(
                "the record at byte {} is damaged, but a later write (batch {}, at byte {start}) is whole: it had been acknowledged",
                self.tail, rh.seq
            ),
        ))
    }
}
