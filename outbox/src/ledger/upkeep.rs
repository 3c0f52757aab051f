//! Time ticks: expiry of messages past `store.ttl` into push failures (per
//! sink, as soon as each message's time is up) and compaction of segments
//! every sink is done with.

use std::time::Duration;

use crate::keys::{self, SegKey};
use crate::segment;
use crate::store::{Batch, Storage, StoreError};

use super::{segments, Ledger, Now};

/// Segments read per step of expiry.
const STEP: usize = 8;
/// Failures written per tick, so intake gets the lock in between.
const MAX_EXPIRED_PER_TICK: usize = 2048;
/// Segments removed per compaction: with 100 ms ticks well above the
/// delivery rate, so freed space keeps up with a draining backlog.
const COMPACT_STEP: usize = 512;

/// What an expiry tick decided.
pub(crate) struct Expired {
    /// Failures and cursors to write; empty when nothing expired.
    pub batch: Batch,
    /// How long until the next message is due (at most the `max_wait` given).
    pub wait: Duration,
}

impl Ledger {
    /// Turns every durable message (below `durable`) older than the TTL
    /// that a sink has not finished into a push failure for that sink.
    ///
    /// # Errors
    /// On storage errors.
    pub(crate) fn expire(
        &mut self,
        store: &dyn Storage,
        now: Now,
        durable: u64,
        max_wait: Duration,
    ) -> Result<Expired, StoreError> {
        let ttl = self.limits.ttl_ms;
        let mut wait = max_wait;
        let mut batch = Batch::default();
        let mut budget = MAX_EXPIRED_PER_TICK;
        'sinks: for sink in 0..self.sinks.len() {
            let mut from = self.sinks[sink].cursor;
            loop {
                let rows = segments(store, from, durable, STEP)?;
                for (k, v) in &rows {
                    let Some(key) = SegKey::decode(k) else {
                        continue;
                    };
                    from = key.last + 1;
                    if self.sinks[sink].all_done(key.first, key.last) {
                        continue;
                    }
                    // Ages never decrease along the sequence: a segment
                    // whose first message is not due holds none that is.
                    let first_due = segment::first_accepted_ms(v)
                        .unwrap_or(0)
                        .saturating_add(ttl);
                    if first_due > now.store_ms {
                        wait = wait.min(Duration::from_millis(first_due - now.store_ms));
                        continue 'sinks;
                    }
                    let seg = match segment::decode(key, v) {
                        Ok(seg) => seg,
                        Err(e) => {
                            self.skip_unreadable(key, &e);
                            continue;
                        }
                    };
                    for msg in seg.records.iter().filter(|m| m.seq < durable) {
                        if self.sinks[sink].is_done(msg.seq) {
                            continue;
                        }
                        let due = msg.accepted_ms.saturating_add(ttl);
                        if due > now.store_ms {
                            wait = wait.min(Duration::from_millis(due - now.store_ms));
                            continue 'sinks;
                        }
                        let error = self.sinks[sink].last_error.clone().unwrap_or_else(|| {
                            format!("not delivered within store.ttl ({})", self.limits.ttl_text)
                        });
                        self.record_failure(&mut batch, sink, msg, &error, now);
                        self.sinks[sink].counters.expired += 1;
                        budget -= 1;
                        if budget == 0 {
                            // Come back at once, after letting intake in.
                            wait = Duration::ZERO;
                            break 'sinks;
                        }
                    }
                }
                if rows.len() < STEP {
                    break;
                }
            }
        }
        if !batch.is_empty() {
            self.persist(&mut batch);
        }
        Ok(Expired { batch, wait })
    }

    /// Removes segments every sink is done with and writes changed cursors
    /// and counters; `None` when there is nothing to write.
    ///
    /// # Errors
    /// On storage errors.
    pub(crate) fn compact(&mut self, store: &dyn Storage) -> Result<Option<Batch>, StoreError> {
        let min = self.min_cursor();
        let rows = store.scan_keys(&[keys::SEG], &keys::seg_from(min), COMPACT_STEP, false)?;
        let mut batch = Batch::default();
        for k in rows {
            let Some(key) = SegKey::decode(&k) else {
                continue;
            };
            if key.last >= min {
                break;
            }
            self.live_n = self.live_n.saturating_sub(key.count());
            self.live_b = self.live_b.saturating_sub(u64::from(key.bytes));
            batch.del(k);
        }
        if batch.is_empty() && !self.dirty {
            return Ok(None);
        }
        self.persist(&mut batch);
        Ok(Some(batch))
    }
}
