//! Appending accepted messages (called by the intake writer with a whole
//! group of requests) and the capacity policy: `store.max_bytes` against
//! the live data and the size on disk, `drop-oldest` or `reject-new`.

use std::time::Duration;

use uuid::Uuid;

use crate::config::FullPolicy;

use super::core::{Core, State};
use super::failures;
use super::keys;
use super::message::{unix_ms, NewMessage, Stored};
use super::salvage::{ImportBatch, Undo};
use super::store::{Batch, StoreError};

/// Sent back for each accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The message id (`$.mid`).
    pub id: Uuid,
    /// Its position in the outbox.
    pub seq: u64,
}

/// Why messages were not accepted. Nothing of a refused request is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// `reject-new` and the store is at `store.max_bytes`: HTTP 503.
    #[error("the outbox is full (store.max_bytes reached, full_policy = reject-new)")]
    Full {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The disk is full: HTTP 507.
    #[error("the disk holding the outbox is full")]
    DiskFull,
    /// The request alone exceeds what the store may hold: HTTP 413.
    #[error("{size} bytes exceed what the outbox accepts at once ({max} bytes)")]
    TooLarge {
        /// Request size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Any other storage failure: HTTP 500.
    #[error("the outbox could not store the messages: {0}")]
    Storage(String),
    /// A message the outbox cannot take (bad type name, body too large).
    #[error("{0}")]
    Invalid(String),
    /// The outbox has stopped.
    #[error("the outbox has stopped")]
    Closed,
}

impl From<StoreError> for IntakeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull(_) => IntakeError::DiskFull,
            other => IntakeError::Storage(other.to_string()),
        }
    }
}

/// One request to the writer: new messages, or a group carried over from
/// another store (salvage, import) with the progress it completes.
pub(crate) enum Request {
    /// Messages accepted now.
    New(Vec<NewMessage>),
    /// Records imported from another store.
    Import(Box<ImportBatch>),
}

impl Request {
    /// Messages it carries.
    pub fn len(&self) -> usize {
        match self {
            Request::New(m) => m.len(),
            Request::Import(b) => b.messages.len() + b.failures.len(),
        }
    }
}

/// The result of [`Core::append`]: one answer per request, what the batch
/// wrote (for a rollback when it does not reach the disk), and why the
/// engine refused the batch, if it did (then nothing was written).
pub(crate) struct Appended {
    pub answers: Vec<Result<Vec<Receipt>, IntakeError>>,
    pub written: Vec<(u64, u64)>,
    /// What undoes the imports' other writes (failures, progress).
    pub undo: Undo,
    pub next_seq: u64,
    pub refused: Option<StoreError>,
}

/// sled's measured space amplification is about 2.1x, so the live data
/// may take half of `store.max_bytes`.
const LIVE_SHARE: u64 = 2;
/// When the disk is at the cap but the live data is below this share of
/// it, freed space is being reused and new data fits: accept.
const REUSE_SHARE: u64 = 8;
const DROP_REASON: &str = "dropped: the outbox reached store.max_bytes (full_policy = drop-oldest)";

/// Where one group's writes go, and what they track.
pub(crate) struct Put<'a> {
    pub batch: &'a mut Batch,
    /// The size on disk when the group started.
    pub disk: u64,
    pub written: &'a mut Vec<(u64, u64)>,
    pub dropped_below: &'a mut u64,
}

/// Records for messages accepted now, numbered from `next_seq`.
fn new_records(st: &mut State, msgs: Vec<NewMessage>, wall_ms: u64) -> Vec<Stored> {
    let now = st.ages.now_ms();
    msgs.into_iter()
        .enumerate()
        .map(|(i, m)| Stored {
            seq: st.next_seq + i as u64,
            id: m.id,
            message_type: m.message_type,
            utc_ms: wall_ms,
            accepted_ms: now,
            only_sink: m.only_sink,
            body: m.body,
        })
        .collect()
}

impl Core {
    /// Applies one group of requests as a single batch (not yet durable).
    pub(crate) fn append(&self, jobs: Vec<Request>) -> Appended {
        let disk = self.disk_bytes();
        let _order = self.write_order();
        let mut st = self.lock();
        let mut batch = Batch::default();
        let mut answers = Vec::with_capacity(jobs.len());
        let mut written = Vec::new();
        let mut dropped_below = 0;
        let mut undo = Undo::default();
        let wall_ms = unix_ms(st.ages.wall_now());
        for job in jobs {
            let mut put = Put {
                batch: &mut batch,
                disk,
                written: &mut written,
                dropped_below: &mut dropped_below,
            };
            let answer = match job {
                Request::New(msgs) => {
                    let records = new_records(&mut st, msgs, wall_ms);
                    self.admit(&mut st, &mut put, records)
                }
                Request::Import(b) => self.append_import(&mut st, &mut put, *b, &mut undo),
            };
            answers.push(answer);
        }
        let next_seq = st.next_seq;
        st.persist_meta(&mut batch);
        for s in &st.sinks {
            s.persist(&mut batch);
        }
        st.dirty = false;
        // Applying a large group takes milliseconds: the sinks read and
        // record PUBACKs meanwhile (the write order keeps other writers out).
        drop(st);
        if let Err(e) = self.storage.apply(batch) {
            self.rollback_ordered(&written, undo);
            return Appended {
                answers,
                written: Vec::new(),
                undo: Undo::default(),
                next_seq,
                refused: Some(e),
            };
        }
        Appended {
            answers,
            written,
            undo,
            next_seq,
            refused: None,
        }
    }

    /// Stores `records` (numbered from `next_seq`) under the capacity
    /// policy, or refuses all of them.
    pub(crate) fn admit(
        &self,
        st: &mut State,
        put: &mut Put<'_>,
        records: Vec<Stored>,
    ) -> Result<Vec<Receipt>, IntakeError> {
        let (batch, disk) = (&mut *put.batch, put.disk);
        let (written, dropped_below) = (&mut *put.written, &mut *put.dropped_below);
        let encoded: Vec<Vec<u8>> = records.iter().map(Stored::encode).collect();
        let size: u64 = encoded.iter().map(|e| e.len() as u64).sum();
        let max = self.settings.max_bytes;
        if size > max / LIVE_SHARE {
            return Err(IntakeError::TooLarge {
                size,
                max: max / LIVE_SHARE,
            });
        }
        let over = (st.live_b + size).saturating_sub(max / LIVE_SHARE);
        let disk_full = disk >= max && st.live_b >= max / REUSE_SHARE;
        let need = if disk_full { over.max(size) } else { over };
        if need > 0 {
            match self.settings.full_policy {
                FullPolicy::RejectNew => {
                    self.counters.rejected_full();
                    return Err(IntakeError::Full {
                        retry_after: Duration::from_secs(5),
                    });
                }
                FullPolicy::DropOldest => {
                    let freed = self.drop_oldest(st, batch, need, dropped_below)?;
                    if freed < over {
                        return Err(IntakeError::Full {
                            retry_after: Duration::from_secs(5),
                        });
                    }
                }
            }
        }
        let mut receipts = Vec::with_capacity(records.len());
        for (r, e) in records.iter().zip(encoded) {
            let bytes = e.len() as u64;
            batch.put(keys::numbered(keys::MSG, r.seq).to_vec(), e);
            for s in &mut st.sinks {
                s.pending_n += 1;
                s.pending_b += bytes;
                if r.only_sink.as_ref().is_some_and(|o| *o != s.name) {
                    s.mark_done(r.seq, bytes);
                }
            }
            written.push((r.seq, bytes));
            receipts.push(Receipt {
                id: r.id,
                seq: r.seq,
            });
        }
        st.next_seq += records.len() as u64;
        st.live_n += records.len() as u64;
        st.live_b += size;
        Ok(receipts)
    }

    /// Deletes the oldest messages until `need` bytes are freed, recording
    /// a failure for every sink that had not finished each one.
    fn drop_oldest(
        &self,
        st: &mut State,
        batch: &mut Batch,
        need: u64,
        dropped_below: &mut u64,
    ) -> Result<u64, IntakeError> {
        let mut freed = 0;
        while freed < need {
            let from = keys::numbered(keys::MSG, *dropped_below);
            let to = keys::numbered(keys::MSG, st.next_seq);
            let rows = self.storage.scan(&from, &to, 64, false)?;
            if rows.is_empty() {
                break;
            }
            for (k, v) in rows {
                let Some(seq) = keys::number(&k) else {
                    continue;
                };
                *dropped_below = seq + 1;
                let bytes = v.len() as u64;
                if let Ok(msg) = Stored::decode(seq, &v) {
                    for sink in 0..st.sinks.len() {
                        if !st.sinks[sink].is_done(seq) {
                            failures::record(st, batch, sink, &msg, bytes, DROP_REASON);
                            st.sinks[sink].counters.dropped += 1;
                        }
                    }
                }
                for s in &mut st.sinks {
                    s.mark_done(seq, bytes);
                }
                batch.del(k);
                st.live_n = st.live_n.saturating_sub(1);
                st.live_b = st.live_b.saturating_sub(bytes);
                freed += bytes;
                if freed >= need {
                    break;
                }
            }
        }
        Ok(freed)
    }

    /// Undoes appended messages that did not reach the disk: they count as
    /// done everywhere and are removed, so nothing half-written is sent;
    /// `undo` takes back the imports' other writes.
    pub(crate) fn rollback(&self, written: &[(u64, u64)], undo: Undo) {
        let _order = self.write_order();
        self.rollback_ordered(written, undo);
    }

    /// [`Core::rollback`] with the write order already held.
    fn rollback_ordered(&self, written: &[(u64, u64)], undo: Undo) {
        if written.is_empty() && undo.is_empty() {
            return;
        }
        let mut st = self.lock();
        let mut batch = undo.batch;
        st.fail_n = st.fail_n.saturating_sub(undo.failures);
        for &(seq, bytes) in written {
            for s in &mut st.sinks {
                s.mark_done(seq, bytes);
            }
            batch.del(keys::numbered(keys::MSG, seq).to_vec());
            st.live_n = st.live_n.saturating_sub(1);
            st.live_b = st.live_b.saturating_sub(bytes);
        }
        st.persist_meta(&mut batch);
        for s in &st.sinks {
            s.persist(&mut batch);
        }
        if let Err(e) = self.storage.apply(batch) {
            // The records stay on disk but are done for every sink: the
            // next compaction removes them.
            tracing::warn!(error = %e, "could not remove messages that failed to reach the disk");
        }
    }
}
