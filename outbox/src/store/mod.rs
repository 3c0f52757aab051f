//! The storage engine behind the outbox: a small ordered key-value trait so
//! the engine (sled or redb, `store.engine`) can be swapped, plus opening
//! with hardening and format versioning (`open`).
//!
//! Public: [`StoreError`], which the daemon's APIs answer from;
//! [`engine_in`] (`tether outbox import` checks a directory with it) and
//! [`durable`] (the daemon writes its provisioning cache the same way). The
//! storage trait (`Storage`, with its `Batch`, `Op` and `Rows`), the
//! engines, the format version and the names on disk are the crate's own.

pub mod durable;
mod format;
#[cfg(test)]
pub(crate) mod mem;
mod open_marker;
mod redb_store;
mod reopen;
mod sled_store;

use std::io;
use std::path::PathBuf;

pub use format::engine_in;
pub(crate) use format::{open, open_existing, SET_ASIDE_PREFIX};
pub(crate) use redb_store::RedbStorage;
pub(crate) use reopen::Reopening;
pub(crate) use sled_store::SledStorage;

/// One write in a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Insert or replace.
    Put(Vec<u8>, Vec<u8>),
    /// Remove (absent keys are fine).
    Del(Vec<u8>),
}

/// Writes applied atomically: all or none survive a crash.
#[derive(Debug, Default, Clone)]
pub(crate) struct Batch {
    /// The writes, in order.
    pub(crate) ops: Vec<Op>,
}

impl Batch {
    /// Adds an insert.
    pub(crate) fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(key.into(), value.into()));
    }

    /// Adds a removal.
    pub(crate) fn del(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Del(key.into()));
    }

    /// Whether there is nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full (ENOSPC/EDQUOT): intake answers 507.
    #[error("the disk holding the outbox is full: {0}")]
    DiskFull(#[source] io::Error),
    /// Any other I/O error.
    #[error("outbox I/O error: {0}")]
    Io(#[source] io::Error),
    /// The engine reports corruption or an unreadable format.
    #[error("the outbox store is corrupt: {0}")]
    Corrupt(String),
    /// The store was written by a newer tether.
    #[error(
        "the outbox store has format version {found}; this tether understands up to {supported}"
    )]
    UnknownVersion {
        /// Version found on disk.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// The directory holds a store written by the other engine.
    #[error(
        "the outbox store in {} was written by {found} but store.engine is {configured}: set \
         store.engine = \"{found}\" again, or move the directory away to start an empty store \
         (its queued messages are then not delivered)",
        dir.display()
    )]
    OtherEngine {
        /// The store directory.
        dir: PathBuf,
        /// The engine whose files are there.
        found: &'static str,
        /// The configured engine.
        configured: &'static str,
    },
    /// Anything else the engine reports.
    #[error("outbox storage error: {0}")]
    Engine(String),
}

impl StoreError {
    /// Classifies an I/O error, telling a full disk apart.
    pub(crate) fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::DiskFull(e),
            _ => StoreError::Io(e),
        }
    }
}

/// Key-value pairs from a scan.
pub(crate) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// An ordered key-value store with atomic batches and an explicit
/// durability point. Keys compare as bytes. The outbox's crash guarantees
/// hold when `apply` is atomic and `sync` is durable.
pub(crate) trait Storage: Send + Sync + 'static {
    /// The value at `key`.
    ///
    /// # Errors
    /// On I/O or corruption.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` entries with `from <= key < to`, ascending, or
    /// descending when `reverse`.
    ///
    /// # Errors
    /// On I/O or corruption.
    fn scan(&self, from: &[u8], to: &[u8], limit: usize, reverse: bool)
        -> Result<Rows, StoreError>;

    /// The keys of [`Storage::scan`], without reading or copying values
    /// (segment keys carry their range and size, so compaction and the
    /// capacity policy need no values).
    ///
    /// # Errors
    /// On I/O or corruption.
    fn scan_keys(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .scan(from, to, limit, reverse)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Applies `batch` atomically (visible at once, not yet durable).
    ///
    /// # Errors
    /// When the engine refuses the write.
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;

    /// Makes everything applied so far durable: survives a crash and a
    /// power cut.
    ///
    /// # Errors
    /// On I/O errors (a full disk is [`StoreError::DiskFull`]).
    fn sync(&self) -> Result<(), StoreError>;

    /// The store's size on disk in bytes.
    fn disk_bytes(&self) -> u64;
}
