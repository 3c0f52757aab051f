//! The accepted-group event: records for a group of requests, the
//! capacity policy (`store.max_bytes` against the live data and the size
//! on disk, `drop-oldest` or `reject-new`), and the segments to write.

use std::time::Duration;

use crate::append::{IntakeError, Receipt, Request};
use crate::config::FullPolicy;
use crate::keys::{self, SegKey};
use crate::message::Stored;
use crate::salvage::{ImportBatch, Undo};
use crate::segment;
use crate::store::{Batch, Storage, StoreError};

use super::{Ledger, Now};

/// The live data (records counted uncompressed) may take this share of
/// `store.max_bytes`: the engine's space amplification (about 2x for
/// sled) then keeps the disk under the cap even for messages that do not
/// compress; compressible ones take far less.
pub(super) const LIVE_SHARE: u64 = 2;
/// When the disk is at the cap but the live data is below this share of
/// it, freed space is being reused and new data fits: accept.
pub(super) const REUSE_SHARE: u64 = 8;
const DROP_REASON: &str = "dropped: the outbox reached store.max_bytes (full_policy = drop-oldest)";
/// Segment keys looked at per step while dropping.
const DROP_STEP: usize = 16;

/// What an accepted group produced: the batch (segments, failures of
/// dropped messages, counters, cursors), one answer per request, and what
/// it wrote, for a rollback when it does not reach the disk.
pub(crate) struct Accepted {
    pub batch: Batch,
    pub answers: Vec<Result<Vec<Receipt>, IntakeError>>,
    pub written: Vec<(u64, u64)>,
    pub segments: Vec<SegKey>,
    /// What undoes the imports' failures and progress.
    pub undo: Undo,
    pub next_seq: u64,
    /// Requests refused by `reject-new`.
    pub rejected_full: u64,
}

impl Ledger {
    /// Takes a group of requests: each is accepted whole or refused whole.
    /// `disk` is the store's size on disk as last measured. Imported
    /// messages keep their id, UTC time and age (stamped back on this
    /// store's clock); their failures get new numbers.
    pub(crate) fn append(
        &mut self,
        store: &dyn Storage,
        jobs: Vec<Request>,
        disk: u64,
        now: Now,
    ) -> Accepted {
        let mut batch = Batch::default();
        let mut answers = Vec::with_capacity(jobs.len());
        let mut records = Vec::new();
        let mut dropped_below = 0;
        let mut rejected_full = 0;
        let mut undo = Undo::default();
        for job in jobs {
            let answer = match job {
                Request::New(msgs) => {
                    let new = msgs
                        .into_iter()
                        .enumerate()
                        .map(|(i, m)| Stored {
                            seq: self.next_seq + i as u64,
                            id: m.id,
                            message_type: m.message_type,
                            utc_ms: now.wall_ms,
                            accepted_ms: now.store_ms,
                            only_sink: m.only_sink,
                            body: m.body,
                        })
                        .collect();
                    self.append_one(
                        store,
                        &mut batch,
                        &mut records,
                        new,
                        disk,
                        now,
                        &mut dropped_below,
                    )
                }
                Request::Import(job) => self.append_import(
                    store,
                    &mut batch,
                    &mut records,
                    *job,
                    disk,
                    now,
                    &mut dropped_below,
                    &mut undo,
                ),
            };
            if matches!(answer, Err(IntakeError::Full { .. }))
                && self.limits.full_policy == FullPolicy::RejectNew
            {
                rejected_full += 1;
            }
            answers.push(answer);
        }
        let mut segments = Vec::new();
        for part in segment::cut(&records) {
            let (key, value) = segment::encode(part);
            batch.put(key.encode(), value);
            segments.push(key);
        }
        let written = records.iter().map(|r| (r.seq, r.encoded_len())).collect();
        self.persist(&mut batch);
        Accepted {
            batch,
            answers,
            written,
            segments,
            undo,
            next_seq: self.next_seq,
            rejected_full,
        }
    }

    /// An imported group: its messages under the capacity policy (all or
    /// none), then its failures under new numbers and its progress.
    #[allow(clippy::too_many_arguments)]
    fn append_import(
        &mut self,
        store: &dyn Storage,
        batch: &mut Batch,
        records: &mut Vec<Stored>,
        job: ImportBatch,
        disk: u64,
        now: Now,
        dropped_below: &mut u64,
        undo: &mut Undo,
    ) -> Result<Vec<Receipt>, IntakeError> {
        let previous = store.get(&job.key)?;
        let new = job
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| Stored {
                seq: self.next_seq + i as u64,
                id: m.msg.id,
                message_type: m.msg.message_type,
                utc_ms: m.utc_ms,
                accepted_ms: now.store_ms.saturating_sub(m.age_ms),
                only_sink: m.msg.only_sink,
                body: m.msg.body,
            })
            .collect();
        let receipts = self.append_one(store, batch, records, new, disk, now, dropped_below)?;
        for f in job.failures {
            let key = self.import_failure(batch, now.store_ms.saturating_sub(f.age_ms), f.failure);
            undo.batch.del(key);
            undo.failures += 1;
        }
        match previous {
            Some(v) => undo.batch.put(job.key.clone(), v),
            None => undo.batch.del(job.key.clone()),
        }
        batch.put(job.key, job.progress.encode());
        Ok(receipts)
    }

    #[allow(clippy::too_many_arguments)]
    fn append_one(
        &mut self,
        store: &dyn Storage,
        batch: &mut Batch,
        records: &mut Vec<Stored>,
        new: Vec<Stored>,
        disk: u64,
        now: Now,
        dropped_below: &mut u64,
    ) -> Result<Vec<Receipt>, IntakeError> {
        let size: u64 = new.iter().map(Stored::encoded_len).sum();
        let max = self.limits.max_bytes;
        if size > max / LIVE_SHARE {
            return Err(IntakeError::TooLarge {
                size,
                max: max / LIVE_SHARE,
            });
        }
        let over = (self.live_b + size).saturating_sub(max / LIVE_SHARE);
        let disk_full = disk >= max && self.live_b >= max / REUSE_SHARE;
        let need = if disk_full { over.max(size) } else { over };
        if need > 0 {
            let full = IntakeError::Full {
                retry_after: Duration::from_secs(5),
            };
            match self.limits.full_policy {
                FullPolicy::RejectNew => return Err(full),
                FullPolicy::DropOldest => {
                    let freed = self.drop_oldest(store, batch, need, dropped_below, now)?;
                    if freed < over {
                        return Err(full);
                    }
                }
            }
        }
        let mut receipts = Vec::with_capacity(new.len());
        for r in &new {
            let bytes = r.encoded_len();
            for s in &mut self.sinks {
                s.pending_n += 1;
                s.pending_b += bytes;
                if r.only_sink.as_ref().is_some_and(|o| *o != s.name) {
                    s.mark_done(r.seq, bytes);
                }
            }
            receipts.push(Receipt {
                id: r.id,
                seq: r.seq,
            });
        }
        self.next_seq += new.len() as u64;
        self.live_n += new.len() as u64;
        self.live_b += size;
        records.extend(new);
        Ok(receipts)
    }

    /// Deletes the oldest segments until `need` bytes are freed, recording
    /// a failure for every sink that had not finished each message.
    fn drop_oldest(
        &mut self,
        store: &dyn Storage,
        batch: &mut Batch,
        need: u64,
        dropped_below: &mut u64,
        now: Now,
    ) -> Result<u64, StoreError> {
        let mut freed = 0;
        while freed < need {
            let rows = store.scan_keys(
                &keys::seg_from(*dropped_below),
                &keys::seg_from(self.next_seq),
                DROP_STEP,
                false,
            )?;
            if rows.is_empty() {
                break;
            }
            for k in rows {
                let Some(key) = SegKey::decode(&k) else {
                    continue;
                };
                *dropped_below = key.last + 1;
                self.drop_segment(store, batch, key, now)?;
                freed += u64::from(key.bytes);
                if freed >= need {
                    break;
                }
            }
        }
        Ok(freed)
    }

    fn drop_segment(
        &mut self,
        store: &dyn Storage,
        batch: &mut Batch,
        key: SegKey,
        now: Now,
    ) -> Result<(), StoreError> {
        let unfinished = self.sinks.iter().any(|s| !s.all_done(key.first, key.last));
        if unfinished {
            let decoded = store.get(&key.encode())?.map(|v| segment::decode(key, &v));
            if let Some(Ok(seg)) = decoded {
                for msg in &seg.records {
                    for sink in 0..self.sinks.len() {
                        if !self.sinks[sink].is_done(msg.seq) {
                            self.record_failure(batch, sink, msg, DROP_REASON, now);
                            self.sinks[sink].counters.dropped += 1;
                        }
                    }
                }
            }
        }
        let per = u64::from(key.bytes) / key.count();
        for s in &mut self.sinks {
            for seq in key.first..=key.last {
                s.mark_done(seq, per);
            }
        }
        batch.del(key.encode());
        self.live_n = self.live_n.saturating_sub(key.count());
        self.live_b = self.live_b.saturating_sub(u64::from(key.bytes));
        Ok(())
    }

    /// Undoes a group that did not reach the disk: its messages count as
    /// done everywhere and its segments are removed, so nothing
    /// half-written is sent. Returns the batch to apply.
    pub(crate) fn rollback(
        &mut self,
        written: &[(u64, u64)],
        segments: &[SegKey],
        undo: Undo,
    ) -> Option<Batch> {
        if written.is_empty() && undo.is_empty() {
            return None;
        }
        let mut batch = undo.batch;
        self.fail_n = self.fail_n.saturating_sub(undo.failures);
        for &(seq, bytes) in written {
            for s in &mut self.sinks {
                s.mark_done(seq, bytes);
            }
            self.live_n = self.live_n.saturating_sub(1);
            self.live_b = self.live_b.saturating_sub(bytes);
        }
        for k in segments {
            batch.del(k.encode());
        }
        self.persist(&mut batch);
        Some(batch)
    }
}
