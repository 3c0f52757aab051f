//! sled 0.34 behind [`Storage`], hardened from the SIGKILL measurements in
//! `notes/dependencies.md` §3a:
//! - leftover `snap.*.generating` files are removed before every open (a
//!   kill while sled writes one leaves a store that never opens again);
//! - `flush()` only calls `sync_file_range`, which survives a crash but not
//!   a power cut, so [`Storage::sync`] also `fdatasync`s the log file and any
//!   blob files (sled never syncs those);
//! - the directory (and sled's unsynced `conf`) are fsynced after opening,
//!   so the names of the files sled created survive a power cut;
//! - the page cache is small and configurable;
//! - the size on disk is measured by walking the directory (sled never
//!   returns freed space, so this is what the disk actually holds).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Batch, Op, Rows, Storage, StoreError};

/// A sled database in one directory.
pub(crate) struct SledStorage {
    db: sled::Db,
    dir: PathBuf,
    /// The log file, kept open for `sync_data`; a mutex because syncs from
    /// the writer and the compactor must not interleave with reopening.
    log: Mutex<Option<File>>,
}

impl SledStorage {
    /// Opens (or creates) the database in `dir` with a page cache of
    /// `cache_bytes`.
    ///
    /// # Errors
    /// When the directory is unusable or sled refuses the files
    /// ([`StoreError::Corrupt`] for corruption).
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        super::durable::create_dir_all(dir).map_err(StoreError::from_io)?;
        remove_unfinished_snapshots(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Durability comes from our explicit flush + fdatasync after each
            // group commit; the background flusher only adds IO.
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(from_sled)?;
        // sled never fsyncs its directory: without this the names of the
        // files it just created (`db`, `conf`) are not durable, and a power
        // cut on a file system that keeps only what POSIX promises takes the
        // log with every acknowledged message (`outbox_powercut` showed it).
        if let Ok(conf) = File::open(dir.join("conf")) {
            conf.sync_all().map_err(StoreError::from_io)?;
        }
        super::durable::sync_dir(dir).map_err(StoreError::from_io)?;
        let log = File::open(dir.join("db")).ok();
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            log: Mutex::new(log),
        })
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
        Ok(self.db.get(key).map_err(from_sled)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Rows, StoreError> {
        let range = self.db.range(from..to);
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        iter.take(limit)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(from_sled))
            .collect()
    }

    fn scan_keys(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let range = self.db.range(from..to).keys();
        let iter: Box<dyn Iterator<Item = sled::Result<sled::IVec>>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        iter.take(limit)
            .map(|r| r.map(|k| k.to_vec()).map_err(from_sled))
            .collect()
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for op in batch.ops {
            match op {
                Op::Put(k, v) => b.insert(k, v),
                Op::Del(k) => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(from_sled)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(from_sled)?;
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.is_none() {
            *log = File::open(self.dir.join("db")).ok();
        }
        if let Some(f) = log.as_ref() {
            f.sync_data().map_err(StoreError::from_io)?;
        }
        drop(log);
        self.sync_blobs()
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
