//! The ledger: the outbox's bookkeeping as a state machine without I/O of
//! its own. It holds the counters, the per-sink cursors and done sets, and
//! decides the capacity policy, expiry, failure recording and compaction.
//! Each event (an accepted group, PUBACKs, a delivery failure, a time
//! tick) comes in with the time ([`Now`]) and returns the [`Batch`] to
//! apply and what happened; reads of stored segments go through a
//! [`Storage`] passed in, never a write. [`Core`](super::Core) is the thin
//! shell that locks the ledger, applies its batches in order and feeds the
//! sinks.

mod append;
mod sink;
mod upkeep;

#[cfg(test)]
mod tests;

use serde_json::Value;

use super::failure_record::{self, PushFailure};
use super::keys::{self, SegKey};
use super::message::Stored;
use super::store::{Batch, Rows, Storage, StoreError};
use crate::config::FullPolicy;

pub(crate) use self::sink::SinkState;

/// The time of an event: the age clock (ages, expiry) and the wall clock
/// (failure timestamps, message `utc`), both in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    /// Store clock ([`super::ages`]).
    pub store_ms: u64,
    /// Wall clock, ms since the epoch.
    pub wall_ms: u64,
}

/// The settings the ledger decides with.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// `store.ttl` in ms.
    pub ttl_ms: u64,
    /// `store.ttl` as configured, for failure messages.
    pub ttl_text: String,
    /// `store.max_bytes`.
    pub max_bytes: u64,
    /// `store.full_policy`.
    pub full_policy: FullPolicy,
}

/// Counters, cursors and decisions.
pub(crate) struct Ledger {
    pub next_seq: u64,
    pub live_n: u64,
    pub live_b: u64,
    pub next_fid: u64,
    pub fail_n: u64,
    pub sinks: Vec<SinkState>,
    /// Set when cursors or counters changed without being written.
    pub dirty: bool,
    pub limits: Limits,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} is malformed"))
}

impl Ledger {
    /// Reads the counters and cursors for `sinks` (a sink seen for the
    /// first time starts at the next new message) and returns the batch
    /// that writes them back, removing cursors of sinks no longer
    /// configured.
    ///
    /// # Errors
    /// On I/O errors, or [`StoreError::Corrupt`] when a counter is unreadable.
    pub(crate) fn load(
        store: &dyn Storage,
        sinks: &[String],
        limits: Limits,
    ) -> Result<(Self, Batch), StoreError> {
        let get_u64s = |key: &[u8]| -> Result<Option<[u64; 2]>, StoreError> {
            store
                .get(key)?
                .map(|v| keys::u64s::<2>(&v).ok_or_else(|| corrupt(&String::from_utf8_lossy(key))))
                .transpose()
        };
        let next_seq = store_next(store)?;
        let [live_n, live_b] = get_u64s(keys::LIVE)?.unwrap_or([0, 0]);
        let [next_fid, fail_n] = get_u64s(keys::FAILS)?.unwrap_or([1, 0]);
        let mut batch = Batch::default();
        for (k, _) in store.scan(b"c:", b"c;", usize::MAX, false)? {
            let name = String::from_utf8_lossy(&k[2..]).to_string();
            if !sinks.contains(&name) {
                tracing::info!(sink = %name, "forgetting the cursor of a sink no longer configured");
                batch.del(k);
            }
        }
        let mut states = Vec::with_capacity(sinks.len());
        for name in sinks {
            states.push(match store.get(&keys::cursor(name))? {
                Some(v) => SinkState::decode(name, &v).ok_or_else(|| corrupt("a sink cursor"))?,
                None => SinkState::new(name, next_seq),
            });
        }
        let mut ledger = Self {
            next_seq,
            live_n,
            live_b,
            next_fid,
            fail_n,
            sinks: states,
            dirty: false,
            limits,
        };
        ledger.persist(&mut batch);
        Ok((ledger, batch))
    }

    /// Adds the counters and every cursor to `batch`.
    pub(crate) fn persist(&mut self, batch: &mut Batch) {
        batch.put(keys::NEXT.to_vec(), self.next_seq.to_be_bytes().to_vec());
        batch.put(keys::LIVE.to_vec(), keys::pair(self.live_n, self.live_b));
        batch.put(keys::FAILS.to_vec(), keys::pair(self.next_fid, self.fail_n));
        for s in &self.sinks {
            s.persist(batch);
        }
        self.dirty = false;
    }

    /// Adds only the counters (failure bookkeeping leaves cursors alone).
    pub(crate) fn persist_counters(&self, batch: &mut Batch) {
        batch.put(keys::NEXT.to_vec(), self.next_seq.to_be_bytes().to_vec());
        batch.put(keys::LIVE.to_vec(), keys::pair(self.live_n, self.live_b));
        batch.put(keys::FAILS.to_vec(), keys::pair(self.next_fid, self.fail_n));
    }

    /// The lowest cursor: everything below is done for every sink.
    pub(crate) fn min_cursor(&self) -> u64 {
        self.sinks
            .iter()
            .map(|s| s.cursor)
            .min()
            .unwrap_or(self.next_seq)
    }

    /// Marks every message of `key` done for every sink (an unreadable
    /// segment is skipped rather than blocking every sink for good).
    pub(crate) fn skip_unreadable(&mut self, key: SegKey, error: &str) {
        tracing::error!(
            first = key.first,
            last = key.last,
            error,
            "skipping an unreadable outbox segment"
        );
        let per = u64::from(key.bytes) / key.count();
        for s in &mut self.sinks {
            for seq in key.first..=key.last {
                s.mark_done(seq, per);
            }
        }
        self.dirty = true;
    }

    /// Picks from decoded segments (in order) up to `limit` messages in
    /// `from..to` still to be done for `sink`, and at most `max_bytes` of
    /// bodies (at least one). Messages addressed to another sink are marked
    /// done on the way.
    pub(crate) fn pick(
        &mut self,
        sink: usize,
        segments: &[&super::segment::Segment],
        from: u64,
        to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Vec<Stored> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for seg in segments {
            for m in &seg.records {
                if m.seq < from {
                    continue;
                }
                if m.seq >= to || out.len() >= limit || bytes >= max_bytes {
                    return out;
                }
                let s = &mut self.sinks[sink];
                if s.is_done(m.seq) {
                    continue;
                }
                if m.only_sink.as_ref().is_some_and(|o| *o != s.name) {
                    s.mark_done(m.seq, m.encoded_len());
                    self.dirty = true;
                    continue;
                }
                bytes += m.body.len();
                out.push(m.clone());
            }
        }
        out
    }

    /// Records that `sink` delivered these `(seq, bytes)`; returns how many
    /// were not already done (expired or dropped meanwhile).
    pub(crate) fn delivered(&mut self, sink: usize, msgs: &[(u64, u64)]) -> usize {
        let s = &mut self.sinks[sink];
        let n = msgs.iter().filter(|(seq, b)| s.mark_done(*seq, *b)).count();
        s.counters.delivered += n as u64;
        s.last_error = None;
        self.dirty |= n > 0;
        n
    }

    /// Records a failure of `msg` for `sink` into `batch` and marks it done.
    pub(crate) fn record_failure(
        &mut self,
        batch: &mut Batch,
        sink: usize,
        msg: &Stored,
        error: &str,
        now: Now,
    ) {
        let id = self.next_fid;
        self.next_fid += 1;
        self.fail_n += 1;
        let f = PushFailure {
            partner_push_failure_id: id.to_string(),
            partner_id: self.sinks[sink].name.clone(),
            created_timestamp: now.wall_ms,
            error_message: error.to_string(),
            partner_push_message: serde_json::from_slice(&msg.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&msg.body).into_owned())),
            message_type: msg.message_type.clone(),
            message_id: msg.id.to_string(),
        };
        batch.put(
            keys::numbered(keys::FAIL, id).to_vec(),
            failure_record::encode(now.store_ms, &f),
        );
        let s = &mut self.sinks[sink];
        s.mark_done(msg.seq, msg.encoded_len());
        s.counters.failures += 1;
        self.dirty = true;
    }

    /// Stores a failure carried over from another store under a new
    /// number, stamped `store_ms` on this store's clock; returns its key.
    pub(crate) fn import_failure(
        &mut self,
        batch: &mut Batch,
        store_ms: u64,
        mut f: PushFailure,
    ) -> Vec<u8> {
        let id = self.next_fid;
        self.next_fid += 1;
        self.fail_n += 1;
        f.partner_push_failure_id = id.to_string();
        let key = keys::numbered(keys::FAIL, id).to_vec();
        batch.put(key.clone(), failure_record::encode(store_ms, &f));
        self.dirty = true;
        key
    }

    /// A permanent refusal of `msg` by `sink`: a failure at once. `None`
    /// when it was already done.
    pub(crate) fn give_up(
        &mut self,
        sink: usize,
        msg: &Stored,
        error: &str,
        now: Now,
    ) -> Option<Batch> {
        if self.sinks[sink].is_done(msg.seq) {
            return None;
        }
        let mut batch = Batch::default();
        self.record_failure(&mut batch, sink, msg, error, now);
        self.persist(&mut batch);
        Some(batch)
    }

    /// Removes the failures `ids` (which exist): the batch to apply.
    pub(crate) fn forget_failures(&mut self, ids: &[Vec<u8>]) -> Batch {
        let mut batch = Batch::default();
        for k in ids {
            batch.del(k.clone());
        }
        self.fail_n = self.fail_n.saturating_sub(ids.len() as u64);
        self.persist_counters(&mut batch);
        batch
    }
}

/// The next sequence number the store itself implies: above its last
/// segment and at least `k:next`.
///
/// # Errors
/// On storage errors.
pub(crate) fn store_next(store: &dyn Storage) -> Result<u64, StoreError> {
    let last = store.scan_keys(&[keys::SEG], &keys::SEG_END, 1, true)?;
    let after_last = last
        .first()
        .and_then(|k| SegKey::decode(k))
        .map_or(1, |k| k.last + 1);
    let next = match store.get(keys::NEXT)? {
        Some(v) => keys::u64s::<1>(&v).ok_or_else(|| corrupt("k:next"))?[0],
        None => 1,
    };
    Ok(next.max(after_last))
}

/// Up to `limit` segments (key, value) holding messages in `from..to`, in
/// order, starting with the one that contains `from`.
///
/// # Errors
/// On storage errors.
pub(crate) fn segments(
    store: &dyn Storage,
    from: u64,
    to: u64,
    limit: usize,
) -> Result<Rows, StoreError> {
    if from >= to || limit == 0 {
        return Ok(Vec::new());
    }
    let before = store.scan_keys(&[keys::SEG], &keys::seg_from(from + 1), 1, true)?;
    let start = match before.first().and_then(|k| SegKey::decode(k)) {
        Some(k) if k.last >= from => k.encode(),
        _ => keys::seg_from(from),
    };
    store.scan(&start, &keys::seg_from(to), limit, false)
}
