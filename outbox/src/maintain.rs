//! Continuous upkeep: expiry of messages past `store.ttl` into push
//! failures (per sink, as soon as each message's time is up), compaction of
//! messages every sink is done with, and the stats the API and metrics show.

use std::time::Duration;

use serde::Serialize;

use crate::core::Core;
use crate::keys::SegKey;
use crate::ledger::{self, SinkState};
use crate::segment;
use crate::store::StoreError;

/// A snapshot of the outbox for `tether outbox stats` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Messages stored.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The store's size on disk.
    pub disk_bytes: u64,
    /// `store.max_bytes`.
    pub max_bytes: u64,
    /// Push failures kept.
    pub failures: u64,
    /// Accepted since start.
    pub accepted: u64,
    /// Per sink.
    pub sinks: Vec<SinkStats>,
}

/// One sink's queue.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkStats {
    /// `hub` or the webhook's name.
    pub name: String,
    /// Messages waiting for this sink.
    pub depth: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Age of the oldest undelivered message, seconds.
    pub oldest_age_seconds: Option<f64>,
    /// Why delivery is failing, if it is.
    pub last_error: Option<String>,
    /// Delivered since start.
    pub delivered: u64,
    /// Sent again (possible duplicates) since start.
    pub duplicates: u64,
    /// Expired into failures since start.
    pub expired: u64,
    /// Dropped (store full) since start.
    pub dropped: u64,
    /// Failures recorded since start (expired, dropped, refused).
    pub failures: u64,
}

impl Core {
    /// Turns every message older than `store.ttl` that a sink has not
    /// finished into a push failure for that sink. Returns how long until
    /// the next message is due (at most `max_wait`).
    ///
    /// # Errors
    /// On storage errors.
    pub(crate) fn expire(&self, max_wait: Duration) -> Result<Duration, StoreError> {
        let durable = *self.durable().borrow();
        let w = self.writing();
        let mut st = w.state();
        let now = st.now();
        let expired = st
            .ledger
            .expire(self.storage.as_ref(), now, durable, max_wait)?;
        if !expired.batch.is_empty() {
            let batch = st.seal(expired.batch);
            drop(st);
            w.apply(batch)?;
        }
        Ok(expired.wait)
    }

    /// Removes segments every sink is done with and writes changed cursors
    /// and counters. Returns whether anything was written (then a sync is
    /// due).
    ///
    /// # Errors
    /// On storage errors.
    pub(crate) fn compact(&self) -> Result<bool, StoreError> {
        let w = self.writing();
        let mut st = w.state();
        let Some(batch) = st.ledger.compact(self.storage.as_ref())? else {
            return Ok(false);
        };
        let batch = st.seal(batch);
        drop(st);
        w.apply(batch)?;
        Ok(true)
    }

    /// A snapshot of counters and queues.
    pub fn stats(&self) -> Stats {
        let durable = *self.durable().borrow();
        let mut guard = self.lock();
        let now = guard.ages.now_ms();
        let st = &mut guard.ledger;
        let oldest: Vec<Option<f64>> = st
            .sinks
            .iter()
            .map(|s| {
                let m = self.oldest_undone(s, durable)?;
                Some(now.saturating_sub(m) as f64 / 1000.0)
            })
            .collect();
        Stats {
            messages: st.live_n,
            bytes: st.live_b,
            disk_bytes: self.disk_bytes(),
            max_bytes: self.settings.max_bytes,
            failures: st.fail_n,
            accepted: self.counters.accepted_total(),
            sinks: st
                .sinks
                .iter_mut()
                .zip(oldest)
                .map(|(s, oldest_age_seconds)| SinkStats {
                    name: s.name.clone(),
                    depth: s.pending_n,
                    bytes: s.pending_b,
                    oldest_age_seconds,
                    last_error: s.last_error.clone(),
                    delivered: s.counters.delivered,
                    duplicates: s.counters.duplicates,
                    expired: s.counters.expired,
                    dropped: s.counters.dropped,
                    failures: s.counters.failures,
                })
                .collect(),
        }
    }
}

impl Core {
    /// The age-clock time of the oldest durable message `sink` has not
    /// finished: reads its first unfinished segment.
    fn oldest_undone(&self, sink: &SinkState, durable: u64) -> Option<u64> {
        let mut from = sink.cursor;
        for _ in 0..4 {
            let rows = ledger::segments(self.storage.as_ref(), from, durable, 4).ok()?;
            if rows.is_empty() {
                return None;
            }
            for (k, v) in rows {
                let key = SegKey::decode(&k)?;
                from = key.last + 1;
                if sink.all_done(key.first, key.last) {
                    continue;
                }
                let seg = segment::decode(key, &v).ok()?;
                return seg
                    .records
                    .iter()
                    .find(|m| !sink.is_done(m.seq))
                    .map(|m| m.accepted_ms);
            }
        }
        None
    }
}
