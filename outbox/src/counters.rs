//! The outbox's counters: process-wide ones, updated without the core
//! lock, and per-sink ones, kept under it. The daemon renders them
//! (`/metrics`, `/healthz`); the core and the ledger only count.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Process-wide counters, updated without the core lock.
#[derive(Debug, Default)]
pub struct Counters {
    accepted: AtomicU64,
    rejected_full: AtomicU64,
    rejected_disk: AtomicU64,
    flushes: AtomicU64,
    flush_micros: AtomicU64,
    flush_max_micros: AtomicU64,
    write_failing: AtomicBool,
    store_lost: AtomicU64,
    store_loss: Mutex<Option<String>>,
    /// Salvage of set-aside or imported stores.
    pub salvage: super::salvage::Status,
}

impl Counters {
    /// Counts durably accepted messages.
    pub(crate) fn accepted(&self, n: u64) {
        self.accepted.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages accepted since start.
    pub(crate) fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// A request refused by `reject-new`.
    pub(crate) fn rejected_full(&self) {
        self.rejected_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one group commit (flush + fdatasync) and whether it worked.
    pub(crate) fn flushed(&self, took: Duration, ok: bool, disk_full: bool) {
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_micros.fetch_add(us, Ordering::Relaxed);
        self.flush_max_micros.fetch_max(us, Ordering::Relaxed);
        self.write_failing.store(!ok, Ordering::Relaxed);
        if disk_full {
            self.rejected_disk.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records that messages were lost with the store (set aside, replaced
    /// or truncated between runs), saying what happened.
    pub(crate) fn store_lost(&self, what: String) {
        self.store_lost.fetch_add(1, Ordering::Relaxed);
        *self
            .store_loss
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(what);
    }

    /// What the last store loss was, if any since start.
    pub(crate) fn store_loss(&self) -> Option<String> {
        self.store_loss
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the last write failed.
    pub fn write_failing(&self) -> bool {
        self.write_failing.load(Ordering::Relaxed)
    }

    /// The counts since start, for `/metrics`.
    pub fn totals(&self) -> Totals {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Totals {
            rejected_full: load(&self.rejected_full),
            rejected_disk: load(&self.rejected_disk),
            store_lost: load(&self.store_lost),
            flushes: load(&self.flushes),
            flush_micros: load(&self.flush_micros),
            flush_max_micros: load(&self.flush_max_micros),
        }
    }
}

/// [`Counters`]' counts at one moment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Requests refused by `reject-new`.
    pub rejected_full: u64,
    /// Group commits that failed because the disk was full.
    pub rejected_disk: u64,
    /// Stores lost between runs (set aside, replaced or truncated).
    pub store_lost: u64,
    /// Group commits (flush + fdatasync).
    pub flushes: u64,
    /// Time spent in group commits, in microseconds.
    pub flush_micros: u64,
    /// The longest group commit, in microseconds.
    pub flush_max_micros: u64,
}

/// Per-sink counters, kept under the core lock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SinkCounters {
    /// Delivered (PUBACK or 2xx).
    pub delivered: u64,
    /// Sent again.
    pub duplicates: u64,
    /// Expired into failures.
    pub expired: u64,
    /// Dropped by drop-oldest.
    pub dropped: u64,
    /// Failures recorded.
    pub failures: u64,
}
