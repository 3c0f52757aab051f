//! Reopening a store after a failed write. Both engines keep a write error
//! (a full disk) for good: sled refuses every later write, redb answers
//! "previous I/O error" until the database is opened again. So after a
//! failed write the engine is dropped and opened again, at most every
//! [`REOPEN_EVERY`], before the next use. It comes back at what the last
//! sync made durable, like after a crash, and intake works again once space
//! returns. Writes applied but not synced before the failure are gone; the
//! outbox keeps nothing it answered for there (a failed group commit is
//! refused and rolled back), and cursors written again later only cause
//! resends.

use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::{Batch, Rows, Storage, StoreError};

/// Most frequent reopen attempt after a failed write.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

type Opener<S> = Box<dyn Fn() -> Result<S, StoreError> + Send + Sync>;

/// An engine that is opened again after a failed write.
pub(crate) struct Reopening<S> {
    open: Opener<S>,
    /// `None` only while a reopen is failing.
    engine: RwLock<Option<S>>,
    /// Set by a failed write until the engine was opened again.
    broken: Mutex<Option<Broken>>,
}

/// A failed write, remembered until the engine is opened again.
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

impl<S: Storage> Reopening<S> {
    /// Opens the engine with `open`, which is called again after a failed
    /// write.
    ///
    /// # Errors
    /// What the first `open` returns.
    pub(crate) fn open(
        open: impl Fn() -> Result<S, StoreError> + Send + Sync + 'static,
    ) -> Result<Self, StoreError> {
        let engine = open()?;
        Ok(Self {
            open: Box::new(open),
            engine: RwLock::new(Some(engine)),
            broken: Mutex::new(None),
        })
    }

    fn broken(&self) -> MutexGuard<'_, Option<Broken>> {
        self.broken.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the engine again after a failed write (at most every
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
        let mut engine = self.engine.write().unwrap_or_else(PoisonError::into_inner);
        // Dropped first: both engines lock their files until closed.
        *engine = None;
        match (self.open)() {
            Ok(new) => {
                *engine = Some(new);
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

    /// Runs `f` on the engine, opening it again first after a failed write.
    fn with<R>(&self, f: impl FnOnce(&S) -> Result<R, StoreError>) -> Result<R, StoreError> {
        self.recover()?;
        let result = {
            let engine = self.engine.read().unwrap_or_else(PoisonError::into_inner);
            engine.as_ref().map(f)
        };
        // The read lock is released: `recover` takes `broken` before `engine`.
        result.unwrap_or_else(|| {
            Err(self.broken().as_ref().map_or_else(
                || StoreError::Engine("the outbox store is closed".into()),
                Broken::error,
            ))
        })
    }

    /// Remembers a failed write so the next use opens the engine again.
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
}

impl<S: Storage> Storage for Reopening<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|s| s.get(key))
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Rows, StoreError> {
        self.with(|s| s.scan(from, to, limit, reverse))
    }

    fn scan_keys(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.with(|s| s.scan_keys(from, to, limit, reverse))
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.with(|s| s.apply(batch)).map_err(|e| self.failed(e))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.with(|s| s.sync()).map_err(|e| self.failed(e))
    }

    fn disk_bytes(&self) -> u64 {
        let engine = self.engine.read().unwrap_or_else(PoisonError::into_inner);
        engine.as_ref().map_or(0, Storage::disk_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStorage;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// redb that fails every write while `full` is set, as a full disk does
    /// (and then keeps failing, as redb does, until it is opened again).
    struct Flaky {
        inner: RedbStorage,
        full: Arc<AtomicUsize>,
    }

    impl Storage for Flaky {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }
        fn scan(&self, f: &[u8], t: &[u8], n: usize, r: bool) -> Result<Rows, StoreError> {
            self.inner.scan(f, t, n, r)
        }
        fn apply(&self, batch: Batch) -> Result<(), StoreError> {
            if self.full.load(Ordering::SeqCst) > 0 {
                return Err(StoreError::DiskFull(io::ErrorKind::StorageFull.into()));
            }
            self.inner.apply(batch)
        }
        fn sync(&self) -> Result<(), StoreError> {
            self.inner.sync()
        }
        fn disk_bytes(&self) -> u64 {
            self.inner.disk_bytes()
        }
    }

    #[test]
    fn a_failed_write_reopens_the_engine_at_the_last_sync() {
        let dir = tempfile::tempdir().unwrap();
        let full = Arc::new(AtomicUsize::new(0));
        let opens = Arc::new(AtomicUsize::new(0));
        let (d, f, o) = (dir.path().to_path_buf(), full.clone(), opens.clone());
        let store = Reopening::open(move || {
            o.fetch_add(1, Ordering::SeqCst);
            Ok(Flaky {
                inner: RedbStorage::open(&d, 1 << 20)?,
                full: f.clone(),
            })
        })
        .unwrap();
        let mut b = Batch::default();
        b.put(b"kept".to_vec(), b"1".to_vec());
        store.apply(b).unwrap();
        store.sync().unwrap();
        let mut b = Batch::default();
        b.put(b"unsynced".to_vec(), b"2".to_vec());
        store.apply(b).unwrap();

        full.store(1, Ordering::SeqCst);
        let mut b = Batch::default();
        b.put(b"refused".to_vec(), b"3".to_vec());
        assert!(matches!(store.apply(b), Err(StoreError::DiskFull(_))));
        full.store(0, Ordering::SeqCst);
        // The next use opens the engine again: back at the last sync.
        assert_eq!(store.get(b"kept").unwrap(), Some(b"1".to_vec()));
        assert_eq!(opens.load(Ordering::SeqCst), 2);
        assert_eq!(store.get(b"refused").unwrap(), None);
        let mut b = Batch::default();
        b.put(b"after".to_vec(), b"4".to_vec());
        store.apply(b).unwrap();
        store.sync().unwrap();
        assert_eq!(store.get(b"after").unwrap(), Some(b"4".to_vec()));
    }
}
