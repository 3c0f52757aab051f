//! sled 0.34 behind [`Storage`], hardened from the SIGKILL measurements in
//! `notes/dependencies.md` §3a:
//! - leftover `snap.*.generating` files are removed before every open (a
//!   kill while sled writes one leaves a store that never opens again);
//! - `flush()` only calls `sync_file_range`, which survives a crash but not
//!   a power cut, so [`Storage::sync`] also `fdatasync`s the log file and any
//!   blob files (sled never syncs those);
//! - the page cache is small and configurable;
//! - the size on disk is measured by walking the directory (sled never
//!   returns freed space, so this is what the disk actually holds);
//! - after a failed write (a full disk) sled refuses every later write
//!   until it is reopened (its error is sticky), so the database is
//!   reopened, at most every [`REOPEN_EVERY`], before the next use: it comes
//!   back at what the last sync made durable, like after a crash, and
//!   intake works again once space returns. Writes applied but not synced
//!   before the failure are gone; the outbox keeps nothing it answered for
//!   there (a failed group commit is refused and rolled back), and cursors
//!   written again later only cause resends.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::{Batch, Op, Rows, Storage, StoreError};

/// Most frequent reopen attempt after a failed write.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// A sled database in one directory.
pub struct SledStorage {
    /// `None` only while a reopen is failing.
    db: RwLock<Option<sled::Db>>,
    dir: PathBuf,
    cache_bytes: u64,
    /// The log file, kept open for `sync_data`; a mutex because syncs from
    /// the writer and the compactor must not interleave with reopening.
    log: Mutex<Option<File>>,
    /// Set by a failed write until the database was reopened.
    broken: Mutex<Option<Broken>>,
}

/// A failed write, remembered until the database is reopened.
struct Broken {
    tried: Instant,
    disk_full: bool,
    what: String,
}

impl Broken {
    fn error(&self) -> StoreError {
        let what = format!("{} (reopening the store)", self.what);
        if self.disk_full {
            StoreError::DiskFull(io::Error::new(io::ErrorKind::StorageFull, what))
        } else {
            StoreError::Io(io::Error::other(what))
        }
    }
}

fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    std::fs::create_dir_all(dir).map_err(StoreError::from_io)?;
    remove_unfinished_snapshots(dir)?;
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        // Durability comes from our explicit flush + fdatasync after each
        // group commit; the background flusher only adds IO.
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(from_sled)
}

impl SledStorage {
    /// Opens (or creates) the database in `dir` with a page cache of
    /// `cache_bytes`.
    ///
    /// # Errors
    /// When the directory is unusable or sled refuses the files
    /// ([`StoreError::Corrupt`] for corruption).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = open_db(dir, cache_bytes)?;
        let log = File::open(dir.join("db")).ok();
        Ok(Self {
            db: RwLock::new(Some(db)),
            dir: dir.to_path_buf(),
            cache_bytes,
            log: Mutex::new(log),
            broken: Mutex::new(None),
        })
    }

    fn broken(&self) -> MutexGuard<'_, Option<Broken>> {
        self.broken.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reopens the database after a failed write (at most every
    /// [`REOPEN_EVERY`]); the failure's error until that worked.
    fn recover(&self) -> Result<(), StoreError> {
        let mut broken = self.broken();
        let Some(b) = broken.as_mut() else {
            return Ok(());
        };
        if b.tried.elapsed() < REOPEN_EVERY {
            return Err(b.error());
        }
        b.tried = Instant::now();
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // Dropped first: sled locks its files until the old handle is gone.
        *db = None;
        *self.log.lock().unwrap_or_else(PoisonError::into_inner) = None;
        match open_db(&self.dir, self.cache_bytes) {
            Ok(new) => {
                *db = Some(new);
                *broken = None;
                tracing::info!(
                    "the outbox store was reopened after a failed write; it accepts writes again"
                );
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "reopening the outbox store failed; retrying");
                Err(b.error())
            }
        }
    }

    /// Runs `f` on the database, reopening it first after a failed write.
    fn with_db<R>(&self, f: impl FnOnce(&sled::Db) -> sled::Result<R>) -> Result<R, StoreError> {
        self.recover()?;
        let result = {
            let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
            db.as_ref().map(|db| f(db).map_err(from_sled))
        };
        // The read lock is released: `recover` takes `broken` before `db`.
        result.unwrap_or_else(|| {
            Err(self.broken().as_ref().map_or_else(
                || StoreError::Engine("the outbox store is closed".into()),
                Broken::error,
            ))
        })
    }

    /// Remembers a failed write so the next use reopens the database.
    fn failed(&self, e: StoreError) -> StoreError {
        if matches!(e, StoreError::DiskFull(_) | StoreError::Io(_)) {
            let mut broken = self.broken();
            if broken.is_none() {
                tracing::warn!(error = %e, "an outbox write failed; the store will be reopened");
                *broken = Some(Broken {
                    // Reopen at the next use: space may already be back.
                    tried: Instant::now()
                        .checked_sub(REOPEN_EVERY)
                        .unwrap_or_else(Instant::now),
                    disk_full: matches!(e, StoreError::DiskFull(_)),
                    what: e.to_string(),
                });
            }
        }
        e
    }

    /// `fdatasync`s the log and the blob files (`flush()` does not).
    fn sync_files(&self) -> Result<(), StoreError> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.is_none() {
            *log = File::open(self.dir.join("db")).ok();
        }
        if let Some(f) = log.as_ref() {
            f.sync_data().map_err(StoreError::from_io)?;
        }
        drop(log);
        self.sync_blobs()
    }

    fn sync_blobs(&self) -> Result<(), StoreError> {
        let blobs = self.dir.join("blobs");
        let Ok(entries) = std::fs::read_dir(&blobs) else {
            return Ok(());
        };
        let mut any = false;
        for entry in entries.flatten() {
            any = true;
            if let Ok(f) = File::open(entry.path()) {
                f.sync_data().map_err(StoreError::from_io)?;
            }
        }
        if any {
            if let Ok(d) = File::open(&blobs) {
                d.sync_all().map_err(StoreError::from_io)?;
            }
        }
        Ok(())
    }
}

/// Deletes `snap.*.generating` files a killed process left behind.
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::from_io(e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %entry.path().display(), "removing an unfinished sled snapshot left by a crash");
            std::fs::remove_file(entry.path()).map_err(StoreError::from_io)?;
        }
    }
    Ok(())
}

fn from_sled(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::from_io(io),
        sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Engine(other.to_string()),
    }
}

impl Storage for SledStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_db(|db| Ok(db.get(key)?.map(|v| v.to_vec())))
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Rows, StoreError> {
        self.with_db(|db| {
            let range = db.range(from..to);
            let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if reverse
            {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            iter.take(limit)
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect()
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for op in batch.ops {
            match op {
                Op::Put(k, v) => b.insert(k, v),
                Op::Del(k) => b.remove(k),
            }
        }
        self.with_db(|db| db.apply_batch(b))
            .map_err(|e| self.failed(e))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.with_db(|db| db.flush().map(drop))
            .and_then(|()| self.sync_files())
            .map_err(|e| self.failed(e))
    }

    fn disk_bytes(&self) -> u64 {
        dir_size(&self.dir)
    }
}

/// Apparent size of every file under `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_generating_snapshots_are_removed_before_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStorage::open(dir.path(), 1 << 20).unwrap();
        let mut b = Batch::default();
        b.put(b"k".to_vec(), b"v".to_vec());
        store.apply(b).unwrap();
        store.sync().unwrap();
        drop(store);
        let junk = dir.path().join("snap.00000000000000FF.generating");
        std::fs::write(&junk, b"half written").unwrap();
        let store = SledStorage::open(dir.path(), 1 << 20).unwrap();
        assert!(!junk.exists());
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
        assert!(store.disk_bytes() > 0);
    }

    #[test]
    fn scans_are_ordered_both_ways_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStorage::open(dir.path(), 1 << 20).unwrap();
        let mut b = Batch::default();
        for i in 0u8..10 {
            b.put(vec![b'm', i], vec![i]);
        }
        b.put(b"z".to_vec(), b"other".to_vec());
        store.apply(b).unwrap();
        let up = store.scan(b"m", b"n", 3, false).unwrap();
        assert_eq!(up.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(), [0, 1, 2]);
        let down = store.scan(b"m", b"n", 2, true).unwrap();
        assert_eq!(down.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(), [9, 8]);
    }
}
