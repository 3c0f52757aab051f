//! The outbox core: a thin shell around the [`Ledger`](super::ledger). It
//! locks the ledger, passes it the time, applies the batches it returns in
//! order, and reads segments for the sinks (keeping each sink's last
//! decoded segment, so a sink reading one message at a time decodes each
//! segment once).
//!
//! Lock order is enforced by [`Writing`]: the only way to apply a batch is
//! through it, and it takes the write order before the state. Writers
//! build their batch under the state lock and apply it under the write
//! order only, so batches reach the store in the order their counters were
//! taken while the sinks, which need only the state lock, do not wait for
//! the store.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tether_protocol::time::unix_ms;
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::config::FullPolicy;

use crate::ages::{AgeClock, Checkpoint};
use crate::counters::Counters;
use crate::keys::{self, SegKey};
use crate::ledger::{self, Ledger, Limits, Now};
use crate::message::Stored;
use crate::segment::{self, Segment};
use crate::store::{Batch, Storage, StoreError};

/// Outbox settings, from `[store]`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Retention before a message becomes a push failure.
    pub(crate) ttl: Duration,
    /// Retention of push failures.
    pub(crate) failure_ttl: Duration,
    /// Cap on the size on disk.
    pub(crate) max_bytes: u64,
    /// What to do when full.
    pub(crate) full_policy: FullPolicy,
}

/// Bodies returned by one [`Core::read`] at most, so a backlog of large
/// messages never sits in memory at once.
pub const READ_BYTES: usize = 1 << 20;
/// Segments fetched per storage scan while reading.
const READ_SEGMENTS: usize = 8;

/// Index of a sink in the core.
pub type SinkId = usize;

/// What the state lock guards: the ledger and the age clock.
pub(crate) struct State {
    pub ledger: Ledger,
    pub ages: AgeClock,
}

impl State {
    /// The time for a ledger event.
    pub(crate) fn now(&mut self) -> Now {
        Now {
            store_ms: self.ages.now_ms(),
            wall_ms: unix_ms(self.ages.wall_now()),
        }
    }

    /// Adds the age-clock checkpoint, which goes with every write.
    pub(crate) fn seal(&mut self, mut batch: Batch) -> Batch {
        batch.put(keys::CLOCK.to_vec(), self.ages.checkpoint().encode());
        batch
    }
}

/// The write path: holds the write order; [`Writing::state`] locks the
/// state after it, and [`Writing::apply`] is the only way batches reach
/// the store.
pub(crate) struct Writing<'a> {
    core: &'a Core,
    _order: MutexGuard<'a, ()>,
}

impl Writing<'_> {
    /// The state, locked after the write order.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.core.lock()
    }

    /// Applies a batch the ledger produced (with the clock sealed in).
    pub(crate) fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.core.storage.apply(batch)
    }
}

/// The shared outbox core.
pub struct Core {
    pub(crate) storage: Arc<dyn Storage>,
    state: Mutex<State>,
    order: Mutex<()>,
    /// Each sink's last decoded segment.
    cache: Mutex<Vec<Option<Arc<Segment>>>>,
    durable: watch::Sender<u64>,
    pub(crate) settings: Settings,
    pub(crate) disk_bytes: AtomicU64,
    pub(crate) counters: Counters,
}

fn limits(settings: &Settings) -> Limits {
    Limits {
        ttl_ms: settings.ttl.as_millis() as u64,
        ttl_text: humantime::format_duration(settings.ttl).to_string(),
        max_bytes: settings.max_bytes,
        full_policy: settings.full_policy,
    }
}

impl Core {
    /// Loads the counters and cursors for `sinks` (the hub first, then
    /// webhooks by name). A sink seen for the first time starts at the
    /// next new message; cursors of sinks no longer configured are removed.
    ///
    /// # Errors
    /// On I/O errors, or [`StoreError::Corrupt`] when a counter is unreadable.
    pub(crate) fn load(
        storage: Arc<dyn Storage>,
        sinks: &[String],
        settings: Settings,
        clock: SharedClock,
    ) -> Result<Self, StoreError> {
        let (ledger, batch) = Ledger::load(storage.as_ref(), sinks, limits(&settings))?;
        let cap = settings.ttl.max(settings.failure_ttl);
        let checkpoint = match storage.get(keys::CLOCK)? {
            Some(v) => Checkpoint::decode(&v)
                .ok_or_else(|| StoreError::Corrupt("k:clock is malformed".into()))?,
            // A new store's clock starts one cap in, not at 0, so records
            // imported from another store (salvage) can be stamped up to
            // one cap back.
            None => Checkpoint {
                store_ms: cap.as_millis().min(u128::from(u64::MAX)) as u64,
                ..Checkpoint::default()
            },
        };
        let ages = AgeClock::resume(clock, Some(checkpoint), cap);
        let next_seq = ledger.next_seq;
        let mut state = State { ledger, ages };
        storage.apply(state.seal(batch))?;
        storage.sync()?;
        let disk = storage.disk_bytes();
        Ok(Self {
            storage,
            cache: Mutex::new(vec![None; sinks.len()]),
            state: Mutex::new(state),
            order: Mutex::new(()),
            durable: watch::channel(next_seq).0,
            settings,
            disk_bytes: AtomicU64::new(disk),
            counters: Counters::default(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a write: takes the write order (see [`Writing`]).
    pub(crate) fn writing(&self) -> Writing<'_> {
        Writing {
            core: self,
            _order: self.order.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Every message below the returned sequence number is durable.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    pub(crate) fn set_durable(&self, next: u64) {
        self.durable.send_if_modified(|d| {
            let moved = next > *d;
            *d = (*d).max(next);
            moved
        });
    }

    /// Sink names, in [`SinkId`] order.
    pub fn sink_names(&self) -> Vec<String> {
        let st = self.lock();
        st.ledger.sinks.iter().map(|s| s.name.clone()).collect()
    }

    /// The id of the sink called `name`.
    pub fn sink_id(&self, name: &str) -> Option<SinkId> {
        self.lock().ledger.sinks.iter().position(|s| s.name == name)
    }

    /// The sink's cursor (where a restarted sink resumes).
    pub fn cursor(&self, sink: SinkId) -> u64 {
        self.lock().ledger.sinks[sink].cursor
    }

    /// Up to `limit` durable messages after `after` still to be done for
    /// `sink`, in order, and at most `READ_BYTES` of them (at least one).
    /// Messages addressed to another sink are marked done on the way.
    ///
    /// # Errors
    /// On storage errors.
    pub fn read(&self, sink: SinkId, after: u64, limit: usize) -> Result<Vec<Stored>, StoreError> {
        let (from, to) = {
            let st = self.lock();
            (
                st.ledger.sinks[sink].cursor.max(after + 1),
                *self.durable.borrow(),
            )
        };
        let mut from = from;
        // Segments whose messages are all done for this sink (finished out
        // of order, or addressed to another sink) yield nothing: read on,
        // so an empty answer means there is nothing to send.
        while from < to {
            let (segs, bad) = self.load_segments(sink, from, to, limit)?;
            let end = segs
                .iter()
                .map(|s| s.key.last + 1)
                .chain(bad.iter().map(|(k, _)| k.last + 1))
                .max()
                .unwrap_or(to);
            let mut st = self.lock();
            for (key, e) in bad {
                st.ledger.skip_unreadable(key, &e);
            }
            let refs: Vec<&Segment> = segs.iter().map(AsRef::as_ref).collect();
            let out = st.ledger.pick(sink, &refs, from, to, limit, READ_BYTES);
            if !out.is_empty() || end <= from {
                return Ok(out);
            }
            from = end;
        }
        Ok(Vec::new())
    }

    /// Decoded segments from the one holding `from`, enough for `limit`
    /// messages or [`READ_BYTES`], and the keys of unreadable ones.
    #[allow(clippy::type_complexity)]
    fn load_segments(
        &self,
        sink: SinkId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<(Vec<Arc<Segment>>, Vec<(SegKey, String)>), StoreError> {
        let mut out: Vec<Arc<Segment>> = Vec::new();
        let mut bad = Vec::new();
        let mut pos = from;
        let (mut count, mut bytes) = (0u64, 0u64);
        let cached = self.cache.lock().unwrap_or_else(PoisonError::into_inner)[sink].clone();
        if let Some(c) = cached.filter(|c| c.key.first <= from && from <= c.key.last) {
            count += c.key.last + 1 - from;
            bytes += u64::from(c.key.bytes);
            pos = c.key.last + 1;
            out.push(c);
        }
        let enough = |count: u64, bytes: u64| count >= limit as u64 || bytes >= READ_BYTES as u64;
        while pos < to && !enough(count, bytes) {
            let rows = ledger::segments(self.storage.as_ref(), pos, to, READ_SEGMENTS)?;
            if rows.is_empty() {
                break;
            }
            for (k, v) in rows {
                let Some(key) = SegKey::decode(&k) else {
                    continue;
                };
                count += key.last + 1 - pos.max(key.first);
                bytes += u64::from(key.bytes);
                pos = key.last + 1;
                match segment::decode(key, &v) {
                    Ok(s) => out.push(Arc::new(s)),
                    Err(e) => bad.push((key, e)),
                }
                if enough(count, bytes) {
                    break;
                }
            }
        }
        if let Some(last) = out.last() {
            self.cache.lock().unwrap_or_else(PoisonError::into_inner)[sink] = Some(last.clone());
        }
        Ok((out, bad))
    }

    /// Records that `sink` delivered these `(seq, bytes)`; returns how many
    /// were not already done (expired or dropped meanwhile).
    pub fn delivered(&self, sink: SinkId, msgs: &[(u64, u64)]) -> usize {
        self.lock().ledger.delivered(sink, msgs)
    }

    /// Removes, among the first `n` of `msgs`, those `sink` no longer has
    /// to deliver (expired or dropped since they were read). One lock for
    /// the lot.
    pub fn drop_done(&self, sink: SinkId, msgs: &mut VecDeque<Stored>, n: usize) {
        let st = self.lock();
        let s = &st.ledger.sinks[sink];
        let mut i = 0;
        for _ in 0..n.min(msgs.len()) {
            if msgs.get(i).is_some_and(|m| s.is_done(m.seq)) {
                msgs.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Whether `seq` no longer needs delivering to `sink`.
    pub fn is_done(&self, sink: SinkId, seq: u64) -> bool {
        self.lock().ledger.sinks[sink].is_done(seq)
    }

    /// Remembers why `sink` is not delivering (for failures and stats).
    pub fn set_error(&self, sink: SinkId, error: Option<String>) {
        self.lock().ledger.sinks[sink].last_error = error;
    }

    /// Counts messages sent again after a lost connection or timeout.
    pub fn count_duplicates(&self, sink: SinkId, n: u64) {
        self.lock().ledger.sinks[sink].counters.duplicates += n;
    }

    /// Messages stored.
    pub(crate) fn live_messages(&self) -> u64 {
        self.lock().ledger.live_n
    }

    /// What start found lost with the store (set aside, replaced,
    /// truncated), if anything.
    pub fn store_loss(&self) -> Option<String> {
        self.counters.store_loss()
    }

    /// What the core counts (rendered by the daemon's `/metrics` and
    /// `/healthz`).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The size on disk, as last measured.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }

    /// Measures the size on disk again.
    pub(crate) fn refresh_disk_bytes(&self) -> u64 {
        let d = self.storage.disk_bytes();
        self.disk_bytes.store(d, Ordering::Relaxed);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::message::NewMessage;
    use crate::store::SledStorage;

    fn core(dir: &std::path::Path) -> Core {
        let storage = Arc::new(SledStorage::open(dir, 1 << 20).unwrap());
        let settings = Settings {
            ttl: Duration::from_secs(3600),
            failure_ttl: Duration::from_secs(3600),
            max_bytes: 1 << 30,
            full_policy: FullPolicy::RejectNew,
        };
        Core::load(storage, &["hub".into()], settings, Arc::new(SystemClock)).unwrap()
    }

    #[test]
    fn messages_done_since_they_were_read_are_dropped_from_the_front_only() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let msgs = (0..6)
            .map(|i| NewMessage::json("attribute", &serde_json::json!({ "i": i })))
            .collect();
        let appended = core.append(vec![crate::append::Request::New(msgs)]);
        core.set_durable(appended.next_seq);
        let mut read: VecDeque<Stored> = core.read(0, 0, 10).unwrap().into();
        let seqs: Vec<u64> = read.iter().map(|m| m.seq).collect();
        assert_eq!(seqs.len(), 6);
        let done: Vec<(u64, u64)> = [0, 2, 5].iter().map(|&i| (seqs[i], 1)).collect();
        assert_eq!(core.delivered(0, &done), 3);
        core.drop_done(0, &mut read, 4);
        let left: Vec<u64> = read.iter().map(|m| m.seq).collect();
        assert_eq!(left, [seqs[1], seqs[3], seqs[4], seqs[5]]);
    }

    #[test]
    fn a_sink_reading_one_message_at_a_time_walks_every_segment_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let msgs: Vec<NewMessage> = (0..1000)
            .map(|i| NewMessage::json("attribute", &serde_json::json!({ "i": i })))
            .collect();
        let appended = core.append(vec![crate::append::Request::New(msgs)]);
        assert!(appended.segments.len() > 3, "{}", appended.segments.len());
        core.set_durable(appended.next_seq);
        let mut after = 0;
        let mut seen = Vec::new();
        while let Some(m) = core.read(0, after, 1).unwrap().pop() {
            after = m.seq;
            seen.push(m.seq);
            core.delivered(0, &[(m.seq, m.encoded_len())]);
        }
        assert_eq!(seen, (1..=1000).collect::<Vec<u64>>());
    }

    #[test]
    fn a_read_past_a_long_run_finished_out_of_order_finds_the_next_message() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let msgs: Vec<NewMessage> = (0..3000)
            .map(|i| NewMessage::json("attribute", &serde_json::json!({ "i": i })))
            .collect();
        let appended = core.append(vec![crate::append::Request::New(msgs)]);
        core.set_durable(appended.next_seq);
        let acked: Vec<(u64, u64)> = (2..3000).map(|seq| (seq, 1)).collect();
        core.delivered(0, &acked);
        assert_eq!(core.cursor(0), 1, "1 is still in flight");
        let next = core.read(0, 1, 10).unwrap();
        assert_eq!(next.iter().map(|m| m.seq).collect::<Vec<_>>(), [3000]);
    }
}
