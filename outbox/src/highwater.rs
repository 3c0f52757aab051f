//! The high-water record: a small file next to the store, outside sled,
//! that notices messages vanishing between runs in ways sled does not
//! report (its log truncated back to an earlier intact point, a store
//! restored from an older copy, the store directory replaced by an empty
//! one). It holds the store's identity (a random id written into the store
//! when it is created), the durable sequence watermark and the live count.
//!
//! Invariant: the record is never ahead of the store. The id is written
//! into the store and synced before any record names it; `nextSeq` is the
//! durable watermark, read after the group commit that fsynced `k:next` at
//! least that high. So for an intact store `k:next >= nextSeq` whenever
//! tether stops, killed or not; a store below the record lost durable
//! writes. Lagging is safe and only narrows what is noticed: losses of what
//! was accepted after the last write (at most [`WRITE_EVERY`] of intake)
//! go unnoticed. The live count may be stale either way; it only sizes the
//! report when the store was replaced.
//!
//! Sequence numbers continue above the record after a loss, so ids of lost
//! messages are never handed out again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::core::Core;
use crate::keys;
use crate::store::{Batch, Storage, StoreError};

/// The record's file name, in `store.path` next to the `outbox` directory.
pub(crate) const STATE_FILE: &str = "outbox.state";
/// Most frequent rewrite of the record while running.
pub(crate) const WRITE_EVERY: Duration = Duration::from_secs(1);
const RECORD_VERSION: u32 = 1;

/// What the record file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    /// Layout of this file.
    pub(crate) version: u32,
    /// The id stored in the store under `k:id`.
    pub(crate) store_id: String,
    /// Every sequence number below this was accepted and durable.
    pub(crate) next_seq: u64,
    /// Messages the store held at the time (may be stale).
    pub(crate) messages: u64,
}

/// The record file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// Reading it failed.
    #[error(
        "cannot read {path}: {source}; the check for outbox messages lost between runs is \
         skipped this time (check the file's permissions)"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// It is not a record this tether understands.
    #[error(
        "{path} is unreadable ({reason}); the check for outbox messages lost between runs is \
         skipped this time and the file is rewritten"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Reads the record in `root`; `None` when there is none (first run, or an
/// upgrade from a tether without it).
///
/// # Errors
/// When the file exists but cannot be read or parsed.
pub(crate) fn read(root: &Path) -> Result<Option<Record>, RecordError> {
    let path = root.join(STATE_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RecordError::Io { path, source }),
    };
    let record: Record = serde_json::from_slice(&text).map_err(|e| RecordError::Malformed {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if record.version != RECORD_VERSION {
        return Err(RecordError::Malformed {
            path,
            reason: format!("version {} (expected {RECORD_VERSION})", record.version),
        });
    }
    Ok(Some(record))
}

/// Replaces the record atomically: a power cut leaves the old or the new
/// one, never a torn file.
///
/// # Errors
/// On I/O errors (a full disk keeps the old record, which is still safe).
pub(crate) fn write(root: &Path, record: &Record) -> io::Result<()> {
    let body = serde_json::to_vec(record).map_err(io::Error::other)?;
    super::store::durable::replace_file(root, STATE_FILE, &body)
}

/// What [`reconcile`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The store's identity.
    pub(crate) store_id: String,
    /// Set when messages were lost, saying what happened.
    pub(crate) loss: Option<String>,
    /// The record named another store (this one replaced it).
    pub(crate) replaced: bool,
}

/// Checks the store against `record` before the core loads it: gives a
/// store without an identity one, and raises `k:next` to the record's so
/// sequence numbers continue above everything ever accepted.
///
/// # Errors
/// On storage errors, or [`StoreError::Corrupt`] when `k:id` is unreadable.
pub(crate) fn reconcile(
    storage: &dyn Storage,
    record: Option<&Record>,
) -> Result<Verdict, StoreError> {
    let mut batch = Batch::default();
    let store_id = match storage.get(keys::ID)? {
        Some(v) => {
            String::from_utf8(v).map_err(|_| StoreError::Corrupt("k:id is malformed".into()))?
        }
        None => {
            let id = Uuid::new_v4().to_string();
            batch.put(keys::ID.to_vec(), id.clone().into_bytes());
            id
        }
    };
    let next = store_next(storage)?;
    let loss = record.and_then(|r| judge(r, &store_id, next));
    if let Some(r) = record.filter(|r| r.next_seq > next) {
        batch.put(keys::NEXT.to_vec(), r.next_seq.to_be_bytes().to_vec());
    }
    if !batch.is_empty() {
        storage.apply(batch)?;
        storage.sync()?;
    }
    Ok(Verdict {
        replaced: record.is_some_and(|r| r.store_id != store_id),
        store_id,
        loss,
    })
}

/// The next sequence number the store itself implies.
fn store_next(storage: &dyn Storage) -> Result<u64, StoreError> {
    super::ledger::store_next(storage)
}

fn judge(r: &Record, store_id: &str, next: u64) -> Option<String> {
    if r.store_id != store_id {
        return (r.messages > 0).then(|| {
            format!(
                "the outbox store is not the one tether last ran with (it was replaced or \
                 recreated): the {} messages the previous store held are gone",
                r.messages
            )
        });
    }
    (next < r.next_seq).then(|| {
        format!(
            "the outbox store lost writes between runs (its files were truncated or restored \
             from an older copy): it ends before sequence number {next} but messages up to {} \
             had been accepted; up to {} accepted messages are gone",
            r.next_seq - 1,
            r.next_seq - next
        )
    })
}

/// Keeps the record up to date while tether runs.
pub(crate) struct HighWater {
    root: PathBuf,
    store_id: String,
    /// When the record was last written and what it said; `None` before
    /// the first write.
    last: Mutex<Option<(Instant, u64, u64)>>,
}

impl HighWater {
    /// Tracks the store with `store_id` in `root`.
    pub(crate) fn new(root: PathBuf, store_id: String) -> Self {
        Self {
            root,
            store_id,
            last: Mutex::new(None),
        }
    }

    /// Writes the record if it changed, at most every [`WRITE_EVERY`]
    /// unless `now` (start and clean stop). A failure is logged: the old
    /// record stays, behind reality, which is safe.
    pub(crate) fn update(&self, core: &Core, now: bool) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next_seq = *core.durable().borrow();
        let messages = core.live_messages();
        if let Some((at, seq, n)) = *last {
            if (seq, n) == (next_seq, messages) || (!now && at.elapsed() < WRITE_EVERY) {
                return;
            }
        }
        let record = Record {
            version: RECORD_VERSION,
            store_id: self.store_id.clone(),
            next_seq,
            messages,
        };
        match write(&self.root, &record) {
            Ok(()) => *last = Some((Instant::now(), next_seq, messages)),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    file = %self.root.join(STATE_FILE).display(),
                    "cannot update the outbox high-water record; retrying (check free space)"
                );
                // Retry after the usual pause, not on every upkeep round.
                *last = Some((Instant::now(), 0, u64::MAX));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::SystemClock;
    use crate::config::{FullPolicy, StoreConfig, StoreEngine};
    use crate::message::NewMessage;
    use crate::Outbox;

    fn record(store_id: &str, next_seq: u64, messages: u64) -> Record {
        Record {
            version: RECORD_VERSION,
            store_id: store_id.into(),
            next_seq,
            messages,
        }
    }

    #[test]
    fn the_record_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let r = record("a", 7, 3);
        write(dir.path(), &r).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(r));
        assert!(!dir.path().join(format!("{STATE_FILE}.tmp")).exists());
    }

    #[test]
    fn a_record_from_another_layout_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &Record {
                version: 9,
                ..record("a", 1, 0)
            },
        )
        .unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(RecordError::Malformed { .. })
        ));
    }

    #[test]
    fn only_a_store_behind_the_record_or_a_replaced_one_that_held_messages_is_a_loss() {
        assert_eq!(judge(&record("a", 10, 5), "a", 10), None);
        assert_eq!(judge(&record("a", 10, 5), "a", 12), None);
        assert!(judge(&record("a", 10, 5), "a", 4).is_some_and(|m| m.contains("up to 6")));
        assert!(judge(&record("a", 10, 5), "b", 1).is_some_and(|m| m.contains("5 messages")));
        assert_eq!(judge(&record("a", 10, 0), "b", 1), None);
    }

    /// `[store]` with the daemon's defaults, under `root`, on the engine
    /// `TETHER_TEST_ENGINE` names (as the daemon's store tests do).
    fn store_config(root: &Path) -> StoreConfig {
        let engine = if std::env::var("TETHER_TEST_ENGINE").as_deref() == Ok("redb") {
            StoreEngine::Redb
        } else {
            StoreEngine::Sled
        };
        StoreConfig {
            path: root.join("store"),
            ttl: Duration::from_secs(24 * 3600),
            max_bytes: 256 << 20,
            full_policy: FullPolicy::DropOldest,
            engine,
            cache_bytes: 4 << 20,
            batch_max_bytes: 0,
            failure_ttl: Duration::from_secs(24 * 3600),
            extended_data: serde_json::Map::new(),
        }
    }

    /// Opens the outbox (retrying while the previous run's writer thread
    /// still holds sled's lock).
    async fn open(cfg: &StoreConfig) -> Outbox {
        for _ in 0..100 {
            match Outbox::open(cfg, &[], Arc::new(SystemClock), &|| {}) {
                Ok(o) => return o,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("the outbox never opened");
    }

    /// One run: opens, accepts `n` messages, stops cleanly (upkeep rounds
    /// as the daemon's upkeep task runs them: one at start, the last at
    /// shutdown, which writes the record). Returns the sequence numbers
    /// accepted.
    async fn run(cfg: &StoreConfig, n: usize) -> Vec<u64> {
        let outbox = open(cfg).await;
        let upkeep = outbox.upkeep();
        upkeep.round(false).await;
        let mut seqs = Vec::new();
        for chunk in 0..n.div_ceil(10) {
            let msgs = (0..10.min(n - chunk * 10))
                .map(|i| {
                    NewMessage::json(
                        "attribute",
                        &serde_json::json!({"n": chunk * 10 + i, "pad": "x".repeat(100)}),
                    )
                })
                .collect();
            let receipts = outbox.intake.submit(msgs).await.expect("accepted");
            seqs.extend(receipts.iter().map(|r| r.seq));
        }
        upkeep.round(true).await;
        seqs
    }

    /// What a start finds: messages held, the loss it reports, the next
    /// sequence number.
    async fn live(cfg: &StoreConfig) -> (u64, Option<String>, u64) {
        let outbox = open(cfg).await;
        let c = &outbox.core;
        let next = *c.durable().borrow();
        (c.live_messages(), c.store_loss(), next)
    }

    #[tokio::test]
    async fn a_missing_record_is_a_first_run() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = store_config(dir.path());
        let first = run(&cfg, 20).await;
        std::fs::remove_file(cfg.path.join(STATE_FILE)).unwrap();
        let (held, loss, next) = live(&cfg).await;
        assert_eq!((held, loss), (20, None));
        assert!(next > *first.last().unwrap());
        let record = read(&cfg.path).unwrap().expect("written again");
        assert_eq!(record.next_seq, next);
    }

    #[tokio::test]
    async fn a_damaged_record_is_no_error_and_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = store_config(dir.path());
        run(&cfg, 20).await;
        let state = cfg.path.join(STATE_FILE);
        std::fs::write(&state, b"{\"version\":1,\"storeId\":\"x\",\"nextSeq\":").unwrap();
        let err = read(&cfg.path).unwrap_err().to_string();
        assert!(
            err.contains(STATE_FILE) && err.contains("rewritten"),
            "{err}"
        );
        let (held, loss, _) = live(&cfg).await;
        assert_eq!((held, loss), (20, None));
        assert!(read(&cfg.path).unwrap().is_some());
    }
}
