//! redb 4 behind [`Storage`]: one file of copy-on-write B-trees whose
//! memory is bounded by its cache (`store.cache_bytes`), however many
//! messages are queued; sled keeps an in-memory entry per tree node, so its
//! memory follows the backlog (BENCHMARKS.md, RSS).
//!
//! [`Storage::apply`] commits with `Durability::None` (visible at once,
//! persisted by the next durable commit); [`Storage::sync`] is an empty
//! commit with `Durability::Immediate`, which persists everything before
//! it. Quick repair stays off: it doubles the cost of a durable commit
//! (11.5 instead of 5.3 ms for one message here), while the full repair it
//! avoids runs only when opening after a crash (about 0.5 s per 500,000
//! queued messages).

use std::io;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};

use super::{Batch, Op, Rows, Storage, StoreError};

/// The file inside the store directory.
pub(super) const FILE: &str = "outbox.redb";

/// The single ordered keyspace (see `crate::keys`).
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outbox");

/// A redb database in `<dir>/outbox.redb`.
pub(crate) struct RedbStorage {
    db: Database,
    file: PathBuf,
}

impl RedbStorage {
    /// Opens (or creates) the database in `dir` with a cache of
    /// `cache_bytes`.
    ///
    /// # Errors
    /// When the directory is unusable, another process has the file open
    /// ([`StoreError::Io`]), or redb refuses the file ([`StoreError::Corrupt`]).
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        super::durable::create_dir_all(dir).map_err(StoreError::from_io)?;
        let file = dir.join(FILE);
        if !file.exists() {
            create_atomically(dir, &file)?;
        }
        let db = Database::builder()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .create(&file)
            .map_err(from_redb)?;
        Ok(Self { db, file })
    }

    fn write(&self, durability: Durability) -> Result<WriteTransaction, StoreError> {
        let mut tx = self.db.begin_write().map_err(from_redb)?;
        tx.set_durability(durability).map_err(from_redb)?;
        Ok(tx)
    }
}

/// Creates a new database beside `file` and renames it into place. redb
/// grows a new file and writes its header before the magic number, so a
/// crash or power cut in between leaves a file that is "not a redb
/// database" and would be moved aside as corrupt (`outbox_powercut`
/// showed it); an interrupted creation here leaves only the temporary
/// file, removed by the next attempt.
fn create_atomically(dir: &Path, file: &Path) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{FILE}.creating"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(StoreError::from_io(e)),
        _ => {}
    }
    drop(Database::create(&tmp).map_err(from_redb)?);
    std::fs::rename(&tmp, file).map_err(StoreError::from_io)?;
    super::durable::sync_dir(dir).map_err(StoreError::from_io)
}

/// Maps redb's errors: I/O stays I/O (a full disk is not corruption) except
/// `InvalidData`, which redb returns for a file that is not a database; a
/// file held by another process is an I/O error too, so it is never moved
/// aside.
fn from_redb(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
            StoreError::Corrupt(io.to_string())
        }
        redb::Error::Io(io) => StoreError::from_io(io),
        redb::Error::DatabaseAlreadyOpen => StoreError::Io(io::Error::new(
            io::ErrorKind::WouldBlock,
            "the outbox file is open in another process; stop the other tether first",
        )),
        e @ (redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_)) => {
            StoreError::Corrupt(e.to_string())
        }
        other => StoreError::Engine(other.to_string()),
    }
}

impl RedbStorage {
    /// Up to `limit` entries with `from <= key < to` (descending when
    /// `reverse`), each mapped by `f`; a missing table is an empty store.
    fn range<T>(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
        f: impl Fn(&[u8], &[u8]) -> T,
    ) -> Result<Vec<T>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let tx = self.db.begin_read().map_err(from_redb)?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(from_redb(e)),
        };
        let range = redb::ReadableTable::range(&table, from..to).map_err(from_redb)?;
        let iter: Box<dyn Iterator<Item = _>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        iter.take(limit)
            .map(|r| r.map(|(k, v)| f(k.value(), v.value())).map_err(from_redb))
            .collect()
    }
}

impl Storage for RedbStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(from_redb)?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(from_redb(e)),
        };
        let value = redb::ReadableTable::get(&table, key).map_err(from_redb)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Rows, StoreError> {
        self.range(from, to, limit, reverse, |k, v| (k.to_vec(), v.to_vec()))
    }

    fn scan_keys(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.range(from, to, limit, reverse, |k, _| k.to_vec())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let tx = self.write(Durability::None)?;
        {
            let mut table = tx.open_table(TABLE).map_err(from_redb)?;
            for op in batch.ops {
                match op {
                    Op::Put(k, v) => table.insert(k.as_slice(), v.as_slice()).map(drop),
                    Op::Del(k) => table.remove(k.as_slice()).map(drop),
                }
                .map_err(from_redb)?;
            }
        }
        tx.commit().map_err(from_redb)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.write(Durability::Immediate)?
            .commit()
            .map_err(from_redb)
    }

    fn disk_bytes(&self) -> u64 {
        std::fs::metadata(&self.file).map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_on_a_new_file_find_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.get(b"k").unwrap(), None);
        assert!(store.scan(b"", &[0xFF], 10, false).unwrap().is_empty());
        store.sync().unwrap();
        assert!(store.disk_bytes() > 0);
    }

    #[test]
    fn synced_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStorage::open(dir.path(), 1 << 20).unwrap();
        let mut b = Batch::default();
        b.put(b"k".to_vec(), b"v".to_vec());
        b.put(b"gone".to_vec(), b"x".to_vec());
        b.del(b"gone".to_vec());
        store.apply(b).unwrap();
        store.sync().unwrap();
        drop(store);
        let store = RedbStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.get(b"gone").unwrap(), None);
    }

    #[test]
    fn a_second_open_of_the_same_file_is_an_io_error_not_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStorage::open(dir.path(), 1 << 20).unwrap();
        let second = RedbStorage::open(dir.path(), 1 << 20);
        assert!(matches!(second, Err(StoreError::Io(_))));
    }

    #[test]
    fn a_damaged_file_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![0x5A; 64 * 1024]).unwrap();
        let r = RedbStorage::open(dir.path(), 1 << 20);
        assert!(matches!(r, Err(StoreError::Corrupt(_))), "{:?}", r.err());
    }

    #[test]
    fn an_interrupted_creation_leaves_no_store_and_the_next_open_creates_one() {
        let dir = tempfile::tempdir().unwrap();
        // What a kill between redb's header and its magic number leaves.
        let creating = dir.path().join(format!("{FILE}.creating"));
        std::fs::write(&creating, vec![0; 64 * 1024]).unwrap();
        let store = RedbStorage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.get(b"k").unwrap(), None);
        assert!(!creating.exists());
        assert!(dir.path().join(FILE).exists());
    }
}
