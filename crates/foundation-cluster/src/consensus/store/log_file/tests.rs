use super::*;
use crate::consensus::store::log_disk::Done;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("foundation-log-file-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn put(i: u64) -> Op {
    let leader_id = <openraft::alias::LeaderIdOf<super::super::TypeConfig> as openraft::vote::RaftLeaderIdExt>::new_committed(1, 1);
    let e = Entry { log_id: openraft::LogId { leader_id, index: i }, payload: openraft::EntryPayload::Blank };
    Op::Put(i, super::super::encode(&e).unwrap())
}

fn batch(ops: Vec<Op>) -> Vec<Request> {
    vec![Request { ops, done: Done::Ignore }]
}

/// Each batch of ten entries, one at a time.
fn write_batches(dir: &Path, batches: u64) -> Vec<u64> {
    let (mut log, _) = LogFile::open(dir).unwrap();
    let mut tails = vec![log.tail];
    for b in 0..batches {
        log.write(&batch((b * 10 + 1..=b * 10 + 10).map(put).collect())).unwrap();
        tails.push(log.tail);
    }
    tails
}

/// A write cut short (the last batch's second half never reached the
/// disk) is discarded, and the log goes on from the batch before.
#[test]
fn a_torn_last_batch_is_discarded() {
    let d = dir("torn");
    let tails = write_batches(&d, 3);
    let file = d.join("raft.log");
    let f = File::options().write(true).open(&file).unwrap();
    // The last batch: its first record's middle is zeros.
    f.write_all_at(&[0u8; 8], tails[2] + 24).unwrap();
    let (mut log, loaded) = LogFile::open(&d).unwrap();
    assert_eq!(loaded.log_last.map(|l| l.index), Some(20));
    log.write(&batch(vec![put(21)])).unwrap();
    drop(log);
    let (log, loaded) = LogFile::open(&d).unwrap();
    assert_eq!(loaded.log_last.map(|l| l.index), Some(21));
    assert_eq!(log.read(1, 22).unwrap().len(), 21);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A large entry is not read whole at start, but one torn in the last
/// batch is found and the batch discarded; one damaged in an earlier
/// batch is an error when it is read.
#[test]
fn large_entries_are_checked_in_the_last_batch() {
    let d = dir("large");
    let big = |i: u64| {
        let leader_id = <openraft::alias::LeaderIdOf<super::super::TypeConfig> as openraft::vote::RaftLeaderIdExt>::new_committed(1, 1);
        let cmd = crate::consensus::types::Command::Put { key: format!("k{i}"), value: vec![7u8; 16 << 10] };
        let e = Entry { log_id: openraft::LogId { leader_id, index: i }, payload: openraft::EntryPayload::Normal(cmd) };
        Op::Put(i, super::super::encode(&e).unwrap())
    };
    let (mut log, _) = LogFile::open(&d).unwrap();
    let mut tails = vec![log.tail];
    for b in 0..3u64 {
        log.write(&batch((b * 2 + 1..=b * 2 + 2).map(big).collect())).unwrap();
        tails.push(log.tail);
    }
    drop(log);
    let f = File::options().write(true).open(d.join("raft.log")).unwrap();
    // The last batch's second entry loses a page in its middle.
    let second = tails[2] + (tails[3] - tails[2]) / 2 + 4096;
    f.write_all_at(&[0u8; 4096], second).unwrap();
    let (log, loaded) = LogFile::open(&d).unwrap();
    assert_eq!(loaded.log_last.map(|l| l.index), Some(5), "the log ends before the torn entry");
    assert!(log.tail > tails[2] && log.tail < tails[3]);
    drop(log);
    // An earlier batch's second entry damaged: the start goes on, the
    // read fails.
    f.write_all_at(&[0u8; 4096], tails[1] - 8192).unwrap();
    let (log, loaded) = LogFile::open(&d).unwrap();
    assert_eq!(loaded.log_last.map(|l| l.index), Some(5));
    let err = log.read(2, 3).expect_err("damaged");
    assert!(err.to_string().contains("entry 2") && err.to_string().contains("damaged"), "{err}");
    assert_eq!(log.read(3, 6).unwrap().len(), 3);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A damaged record followed by a whole later batch had been
/// acknowledged: the file is refused and left as it was.
#[test]
fn a_damaged_acknowledged_record_is_refused() {
    let d = dir("damaged");
    let tails = write_batches(&d, 3);
    let file = d.join("raft.log");
    let good = std::fs::read(&file).unwrap();
    let f = File::options().write(true).open(&file).unwrap();
    // The second batch's first record (the third batch is whole).
    f.write_all_at(&[0xAA], tails[1] + 30).unwrap();
    let before = std::fs::read(&file).unwrap();
    let err = LogFile::open(&d).err().expect("refused");
    assert!(err.to_string().contains("raft.log is corrupt") && err.to_string().contains("(batch 3,"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before, "left as it was");
    // Cut inside a record: refused too.
    std::fs::write(&file, &good[..tails[2] as usize + 30]).unwrap();
    let err = LogFile::open(&d).err().expect("refused");
    assert!(err.to_string().contains("cut short"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A file being created is written aside: what a crash left of it
/// (`raft.log.new`) is not the log, and the next start creates it anew.
#[test]
fn a_creation_cut_short_is_started_over() {
    let d = dir("created");
    std::fs::write(d.join("raft.log.new"), b"foundation r").unwrap();
    let (_, loaded) = LogFile::open(&d).unwrap();
    assert!(loaded.identity.is_none() && loaded.log_last.is_none());
    assert_eq!(std::fs::read(d.join("raft.log")).unwrap()[..HEADER as usize], header());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn truncate_and_purge_replay_as_written() {
    let d = dir("replay");
    let vote = super::super::encode(&openraft::alias::VoteOf::<super::super::TypeConfig>::new_committed(1, 1)).unwrap();
    let (mut log, _) = LogFile::open(&d).unwrap();
    log.write(&batch((1..=10).map(put).collect())).unwrap();
    log.write(&batch(vec![Op::TruncateFrom(8), put(8), Op::PurgeTo(3), Op::Meta(VOTE, vote.clone())])).unwrap();
    drop(log);
    let (log, loaded) = LogFile::open(&d).unwrap();
    assert_eq!((log.index.first, log.index.next()), (4, 9));
    assert_eq!(loaded.log_last.map(|l| l.index), Some(8));
    assert_eq!(log.metas.get(VOTE), Some(&vote));
    assert_eq!(log.read(0, 100).unwrap().iter().map(|e| e.log_id.index).collect::<Vec<_>>(), [4, 5, 6, 7, 8]);
    std::fs::remove_dir_all(&d).unwrap();
}
