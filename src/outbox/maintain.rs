//! Continuous upkeep: expiry of messages past `store.ttl` into push
//! failures (per sink, as soon as each message's time is up), compaction of
//! messages every sink is done with, and the stats the API and metrics show.

use std::time::Duration;

use serde::Serialize;

use super::core::Core;
use super::failures;
use super::keys;
use super::message::Stored;
use super::store::{Batch, StoreError};

/// Rows looked at per step, so the lock is held briefly.
const STEP: usize = 256;
/// Messages removed per compaction call: above the delivery rate (~25k/s)
/// at 10 rounds a second, so freed space keeps up with a draining backlog.
const COMPACT_STEP: usize = 8192;
/// Failures written per call, for the same reason.
const MAX_EXPIRED_PER_CALL: usize = 2048;

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
    pub fn expire(&self, max_wait: Duration) -> Result<Duration, StoreError> {
        let ttl = self.settings.ttl.as_millis() as u64;
        let durable = *self.durable().borrow();
        let mut wait = max_wait;
        let _order = self.write_order();
        let mut st = self.lock();
        let mut batch = Batch::default();
        let mut budget = MAX_EXPIRED_PER_CALL;
        for sink in 0..st.sinks.len() {
            let mut from = st.sinks[sink].cursor;
            'sink: loop {
                let rows = self.storage.scan(
                    &keys::numbered(keys::MSG, from),
                    &keys::numbered(keys::MSG, durable),
                    STEP,
                    false,
                )?;
                let now = st.ages.now_ms();
                for (k, v) in &rows {
                    let Some(seq) = keys::number(k) else { continue };
                    from = seq + 1;
                    if st.sinks[sink].is_done(seq) {
                        continue;
                    }
                    let Ok(msg) = Stored::decode(seq, v) else {
                        continue;
                    };
                    let due = msg.accepted_ms.saturating_add(ttl);
                    if due > now {
                        wait = wait.min(Duration::from_millis(due - now));
                        break 'sink;
                    }
                    let error = st.sinks[sink].last_error.clone().unwrap_or_else(|| {
                        format!(
                            "not delivered within store.ttl ({})",
                            humantime::format_duration(self.settings.ttl)
                        )
                    });
                    failures::record(&mut st, &mut batch, sink, &msg, v.len() as u64, &error);
                    st.sinks[sink].counters.expired += 1;
                    budget -= 1;
                    if budget == 0 {
                        // Come back at once, after letting intake in.
                        wait = Duration::ZERO;
                        break 'sink;
                    }
                }
                if rows.len() < STEP {
                    break;
                }
            }
        }
        if !batch.is_empty() {
            st.persist_meta(&mut batch);
            for s in &st.sinks {
                s.persist(&mut batch);
            }
            st.dirty = false;
            self.storage.apply(batch)?;
        }
        Ok(wait)
    }

    /// Removes messages every sink is done with and writes changed cursors
    /// and counters. Returns whether anything was written (then a sync is
    /// due).
    ///
    /// # Errors
    /// On storage errors.
    pub fn compact(&self) -> Result<bool, StoreError> {
        let _order = self.write_order();
        let mut st = self.lock();
        let min = st.min_cursor();
        let rows = self.storage.scan(
            &[keys::MSG],
            &keys::numbered(keys::MSG, min),
            COMPACT_STEP,
            false,
        )?;
        if rows.is_empty() && !st.dirty {
            return Ok(false);
        }
        let mut batch = Batch::default();
        for (k, v) in rows {
            st.live_n = st.live_n.saturating_sub(1);
            st.live_b = st.live_b.saturating_sub(v.len() as u64);
            batch.del(k);
        }
        st.persist_meta(&mut batch);
        for s in &st.sinks {
            s.persist(&mut batch);
        }
        st.dirty = false;
        self.storage.apply(batch)?;
        Ok(true)
    }

    /// A snapshot of counters and queues.
    pub fn stats(&self) -> Stats {
        let durable = *self.durable().borrow();
        let mut st = self.lock();
        let now = st.ages.now_ms();
        let cursors: Vec<u64> = st.sinks.iter().map(|s| s.cursor).collect();
        let oldest: Vec<Option<f64>> = cursors
            .iter()
            .map(|&c| {
                if c >= durable {
                    return None;
                }
                let rows = self
                    .storage
                    .scan(
                        &keys::numbered(keys::MSG, c),
                        &keys::numbered(keys::MSG, durable),
                        1,
                        false,
                    )
                    .ok()?;
                let (k, v) = rows.first()?;
                let m = Stored::decode(keys::number(k)?, v).ok()?;
                Some(now.saturating_sub(m.accepted_ms) as f64 / 1000.0)
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
