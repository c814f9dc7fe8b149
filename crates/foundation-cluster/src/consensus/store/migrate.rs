//! A data directory from before the log was a file of its own: its
//! `raft.redb` (a redb database with tables `log` and `meta`) becomes a
//! `raft.log` holding the same entries and metadata, made durable before
//! the database is removed. A crash halfway leaves the database, and the
//! next start does it again.

use std::io;
use std::path::Path;

use redb::{ReadableTable, TableDefinition};

use super::log_disk::Op;
use super::log_file::{frame_all, write_new};
use super::{COMMITTED, IDENTITY, PARTICIPANTS, PURGED, VOTE, io_err};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Writes `log` from `dir/raft.redb` when there is one, then removes it.
/// A corrupt database is an error that names it, and is left as it was.
pub(super) fn from_redb(dir: &Path, log: &Path) -> io::Result<()> {
    let db_path = dir.join("raft.redb");
    if !db_path.exists() {
        return Ok(());
    }
    let corrupt = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("{} is corrupt: {why}", db_path.display()));
    let ops = std::panic::catch_unwind(|| {
        let db = redb::Database::open(&db_path).map_err(|e| corrupt(e.to_string()))?;
        read_all(&db).map_err(|e| corrupt(e.to_string()))
    })
    .unwrap_or_else(|_| Err(corrupt("the database panicked while reading".into())))?;
    let tmp = log.with_extension("log.new");
    write_new(&tmp, |out| out.push(&frame_all(&ops, 1)))?;
    std::fs::rename(&tmp, log)?;
    std::fs::File::open(dir)?.sync_all()?;
    std::fs::remove_file(&db_path)?;
    tracing::info!(from = %db_path.display(), to = %log.display(), entries = ops.iter().filter(|o| matches!(o, Op::Put(..))).count(), "moved the Raft log out of its redb database");
    Ok(())
}

/// Every metadata value, then every entry, as ops.
fn read_all(db: &redb::Database) -> io::Result<Vec<Op>> {
    let txn = db.begin_read().map_err(io_err)?;
    let mut ops = Vec::new();
    match txn.open_table(META) {
        Ok(t) => {
            for key in [IDENTITY, VOTE, COMMITTED, PURGED, PARTICIPANTS] {
                if let Some(v) = t.get(key).map_err(io_err)? {
                    ops.push(Op::Meta(key, v.value().to_vec()));
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(io_err(e)),
    }
    match txn.open_table(LOG) {
        Ok(t) => {
            for row in t.iter().map_err(io_err)? {
                let (k, v) = row.map_err(io_err)?;
                ops.push(Op::Put(k.value(), v.value().to_vec()));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(io_err(e)),
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with a `raft.redb` opens with the same log and
    /// metadata, now in `raft.log`, and the database is gone.
    #[test]
    fn a_redb_log_becomes_a_log_file() {
        let dir = std::env::temp_dir().join(format!("foundation-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let leader_id = <openraft::alias::LeaderIdOf<super::super::TypeConfig> as openraft::vote::RaftLeaderIdExt>::new_committed(1, 1);
        {
            let db = redb::Database::create(dir.join("raft.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut log = txn.open_table(LOG).unwrap();
                for index in 5..=7u64 {
                    let e = super::super::Entry { log_id: openraft::LogId { leader_id, index }, payload: openraft::EntryPayload::Blank };
                    log.insert(index, super::super::encode(&e).unwrap().as_slice()).unwrap();
                }
                let mut meta = txn.open_table(META).unwrap();
                let vote = openraft::alias::VoteOf::<super::super::TypeConfig>::new_committed(1, 1);
                meta.insert(VOTE, super::super::encode(&vote).unwrap().as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let (file, loaded) = super::super::log_file::LogFile::open(&dir).unwrap();
        assert_eq!(loaded.log_last.map(|l| l.index), Some(7));
        assert_eq!(file.read(0, 10).unwrap().len(), 3);
        assert!(!dir.join("raft.redb").exists() && dir.join("raft.log").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
