//! The state's tables in redb, and how a value is stored in them.
//!
//! A value of at most [`CHUNK_BYTES`] is one row of `kv`. A larger one is
//! its length in `big` and its bytes in `chunks`, keyed `(key, n)`, each
//! at most [`CHUNK_BYTES`]. redb keeps a row in a page that is a power of
//! two, so a 256 KiB value stored whole takes a 512 KiB page: twice the
//! data written and kept. In chunks that fit 64 KiB pages, it is about
//! the data (measured: 1.09 GB written for 1 GiB of 256 KiB values,
//! against 2.15 GB whole).

use redb::{ReadableTable, TableDefinition};

#[allow(clippy::wildcard_imports)] // the state database's private pieces
use super::*;
use crate::consensus::store::snapshot::RowRef;

pub(super) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
pub(super) const LOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("locks");
pub(super) const BARRIERS: TableDefinition<&str, &[u8]> = TableDefinition::new("barriers");
/// The length of each value stored in chunks.
const BIG: TableDefinition<&str, u64> = TableDefinition::new("big");
/// The chunks of the values in `big`.
pub(super) const CHUNKS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("chunks");

/// Largest value stored as one row; larger ones go in chunks of this size
/// (a 64 KiB page, less room for the key and the page's header).
pub(super) const CHUNK_BYTES: usize = (64 << 10) - 512;

/// The state's tables in one transaction.
pub(super) struct Tables<T, B, C> {
    kv: T,
    locks: T,
    barriers: T,
    big: B,
    chunks: C,
}

type Table<'t, K, V> = redb::Table<'t, K, V>;
pub(super) type WriteTables<'t> =
    Tables<Table<'t, &'static str, &'static [u8]>, Table<'t, &'static str, u64>, Table<'t, (&'static str, u32), &'static [u8]>>;
pub(super) type ReadTables = Tables<
    redb::ReadOnlyTable<&'static str, &'static [u8]>,
    redb::ReadOnlyTable<&'static str, u64>,
    redb::ReadOnlyTable<(&'static str, u32), &'static [u8]>,
>;

fn chunk_count(len: u64) -> u32 {
    len.div_ceil(CHUNK_BYTES as u64) as u32
}

impl WriteTables<'_> {
    /// Opens (or creates) every table of the state in `txn`.
    pub(super) fn open(txn: &redb::WriteTransaction) -> io::Result<WriteTables<'_>> {
        Ok(Tables {
            kv: txn.open_table(KV).map_err(io_err)?,
            locks: txn.open_table(LOCKS).map_err(io_err)?,
            barriers: txn.open_table(BARRIERS).map_err(io_err)?,
            big: txn.open_table(BIG).map_err(io_err)?,
            chunks: txn.open_table(CHUNKS).map_err(io_err)?,
        })
    }

    /// Deletes every table of the state in `txn`.
    pub(super) fn delete(txn: &redb::WriteTransaction) -> io::Result<()> {
        for def in [KV, LOCKS, BARRIERS] {
            txn.delete_table(def).map_err(io_err)?;
        }
        txn.delete_table(BIG).map_err(io_err)?;
        txn.delete_table(CHUNKS).map_err(io_err)?;
        Ok(())
    }

    /// Sets (or, with `None`, removes) a row.
    pub(super) fn set(&mut self, which: Which, key: &str, value: Option<&[u8]>) -> io::Result<()> {
        let table = match which {
            Which::Kv => return self.set_value(key, value),
            Which::Lock => &mut self.locks,
            Which::Barrier => &mut self.barriers,
        };
        match value {
            Some(v) => table.insert(key, v).map(drop),
            None => table.remove(key).map(drop),
        }
        .map_err(io_err)
    }

    /// Sets or removes a value, whole or in chunks, and the chunks of what
    /// it replaces.
    fn set_value(&mut self, key: &str, value: Option<&[u8]>) -> io::Result<()> {
        let before = self.big.remove(key).map_err(io_err)?.map_or(0, |len| chunk_count(len.value()));
        let mut now = 0;
        match value {
            Some(v) if v.len() > CHUNK_BYTES => {
                self.kv.remove(key).map_err(io_err)?;
                self.big.insert(key, v.len() as u64).map_err(io_err)?;
                for (n, chunk) in v.chunks(CHUNK_BYTES).enumerate() {
                    self.chunks.insert((key, n as u32), chunk).map_err(io_err)?;
                }
                now = chunk_count(v.len() as u64);
            }
            Some(v) => drop(self.kv.insert(key, v).map_err(io_err)?),
            None => drop(self.kv.remove(key).map_err(io_err)?),
        }
        for n in now..before {
            self.chunks.remove((key, n)).map_err(io_err)?;
        }
        Ok(())
    }

    /// Inserts a snapshot's row; its bytes.
    pub(super) fn insert(&mut self, row: RowRef<'_>) -> io::Result<usize> {
        let (which, key, encoded) = match row {
            RowRef::Kv(k, v) => {
                self.set(Which::Kv, k, Some(v))?;
                return Ok(k.len() + v.len());
            }
            RowRef::Lock(k, l) => (Which::Lock, k, encode(&l)?),
            RowRef::Barrier(k, b) => (Which::Barrier, k, encode(&b)?),
        };
        self.set(which, key, Some(&encoded))?;
        Ok(key.len() + encoded.len())
    }
}

/// The tables as of `txn`; `None` before the database was set up, or while
/// a snapshot is installed in place.
pub(super) fn read_tables(txn: &redb::ReadTransaction) -> io::Result<Option<ReadTables>> {
    fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
        txn: &redb::ReadTransaction,
        def: TableDefinition<K, V>,
    ) -> io::Result<Option<redb::ReadOnlyTable<K, V>>> {
        match txn.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }
    Ok(match (open(txn, KV)?, open(txn, LOCKS)?, open(txn, BARRIERS)?, open(txn, BIG)?, open(txn, CHUNKS)?) {
        (Some(kv), Some(locks), Some(barriers), Some(big), Some(chunks)) => Some(Tables { kv, locks, barriers, big, chunks }),
        _ => None,
    })
}

impl<T, B, C> Tables<T, B, C>
where
    T: ReadableTable<&'static str, &'static [u8]>,
    B: ReadableTable<&'static str, u64>,
    C: ReadableTable<(&'static str, u32), &'static [u8]>,
{
    /// A row's value, whole.
    pub(super) fn get(&self, which: Which, key: &str) -> io::Result<Option<Vec<u8>>> {
        let table = match which {
            Which::Kv => return self.value(key),
            Which::Lock => &self.locks,
            Which::Barrier => &self.barriers,
        };
        Ok(table.get(key).map_err(io_err)?.map(|v| v.value().to_vec()))
    }

    fn value(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        if let Some(v) = self.kv.get(key).map_err(io_err)? {
            return Ok(Some(v.value().to_vec()));
        }
        let Some(len) = self.big.get(key).map_err(io_err)?.map(|l| l.value()) else { return Ok(None) };
        let mut value = Vec::with_capacity(usize::try_from(len).map_err(io_err)?);
        for chunk in self.chunks.range((key, 0)..(key, chunk_count(len))).map_err(io_err)? {
            value.extend_from_slice(chunk.map_err(io_err)?.1.value());
        }
        if value.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the state database is corrupt: value {key:?} has {} of its {len} bytes", value.len()),
            ));
        }
        Ok(Some(value))
    }

    /// Every row, table by table (values stored in chunks after the others).
    pub(super) fn rows(&self, mut each: impl FnMut(RowRef<'_>) -> io::Result<()>) -> io::Result<()> {
        for row in self.kv.iter().map_err(io_err)? {
            let (k, v) = row.map_err(io_err)?;
            each(RowRef::Kv(k.value(), v.value()))?;
        }
        for row in self.big.iter().map_err(io_err)? {
            let key = row.map_err(io_err)?.0.value().to_owned();
            let value = self.value(&key)?.ok_or_else(|| io_err("a value stored in chunks vanished"))?;
            each(RowRef::Kv(&key, &value))?;
        }
        for row in self.locks.iter().map_err(io_err)? {
            let (k, v) = row.map_err(io_err)?;
            each(RowRef::Lock(k.value(), decode(v.value())?))?;
        }
        for row in self.barriers.iter().map_err(io_err)? {
            let (k, v) = row.map_err(io_err)?;
            each(RowRef::Barrier(k.value(), decode(v.value())?))?;
        }
        Ok(())
    }
}
