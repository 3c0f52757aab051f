//! An in-memory [`Storage`] for unit tests of the ledger and the core: a
//! sorted map, batches applied whole; `sync` counts calls, and fails as on
//! a full disk on demand.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::{Batch, Op, Rows, Storage, StoreError};

/// A sorted map behind a mutex.
#[derive(Default)]
pub(crate) struct MemStorage {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// `sync` calls so far.
    pub(crate) syncs: AtomicU64,
    /// While set, `sync` fails as on a full disk. Only `sync`: what was
    /// applied stays visible, as on an engine whose write-back fails, so
    /// the outbox has to take back what it applied itself.
    pub(crate) disk_full: AtomicBool,
}

impl Storage for MemStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.lock().unwrap().get(key).cloned())
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Rows, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let map = self.map.lock().unwrap();
        let range = map.range(from.to_vec()..to.to_vec());
        let rows: Rows = if reverse {
            range
                .rev()
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            range
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Ok(rows)
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut map = self.map.lock().unwrap();
        for op in batch.ops {
            match op {
                Op::Put(k, v) => map.insert(k, v),
                Op::Del(k) => map.remove(&k),
            };
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if self.disk_full.load(Ordering::SeqCst) {
            // The kind ENOSPC maps to, classified as the engines do.
            return Err(StoreError::from_io(io::ErrorKind::StorageFull.into()));
        }
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        self.map
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}
