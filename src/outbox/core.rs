//! The outbox core: the in-memory view of the store (counters, per-sink
//! cursors) behind one mutex, and the operations every task uses. Writes
//! go through [`Storage`] batches that carry the counters they change, so
//! a restart reads a few keys and never scans the backlog.
//!
//! A sink's cursor means "every message below it is done for this sink"
//! (delivered, failed, dropped, or not addressed to it); `done` holds the
//! out-of-order completions above the cursor (at most the in-flight
//! window). A message leaves the store once every sink's cursor passed it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::config::FullPolicy;

use super::ages::{AgeClock, Checkpoint};
use super::keys;
use super::message::Stored;
use super::metrics::{Counters, SinkCounters};
use super::store::{Batch, Storage, StoreError};

/// Outbox settings, from `[store]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Retention before a message becomes a push failure.
    pub ttl: Duration,
    /// Retention of push failures.
    pub failure_ttl: Duration,
    /// Cap on the size on disk.
    pub max_bytes: u64,
    /// What to do when full.
    pub full_policy: FullPolicy,
}

/// Bodies returned by one [`Core::read`] at most, so a backlog of large
/// messages never sits in memory at once.
pub const READ_BYTES: usize = 1 << 20;

/// Index of a sink in the core.
pub type SinkId = usize;

pub(crate) struct SinkState {
    pub name: String,
    pub cursor: u64,
    /// Completed above the cursor: seq -> bytes.
    pub done: BTreeMap<u64, u64>,
    pub done_bytes: u64,
    /// Messages not yet done for this sink (depth), and their bytes.
    pub pending_n: u64,
    pub pending_b: u64,
    /// Why the last attempt failed; becomes a failure's `errorMessage`.
    pub last_error: Option<String>,
    pub counters: SinkCounters,
}

impl SinkState {
    pub fn is_done(&self, seq: u64) -> bool {
        seq < self.cursor || self.done.contains_key(&seq)
    }

    /// Marks `seq` done; false when it already was.
    pub fn mark_done(&mut self, seq: u64, bytes: u64) -> bool {
        if self.is_done(seq) {
            return false;
        }
        self.done.insert(seq, bytes);
        self.done_bytes += bytes;
        self.pending_n = self.pending_n.saturating_sub(1);
        self.pending_b = self.pending_b.saturating_sub(bytes);
        while let Some(b) = self.done.remove(&self.cursor) {
            self.done_bytes -= b;
            self.cursor += 1;
        }
        true
    }

    /// What a restart will find pending: done-above-cursor is forgotten.
    fn restart_depth(&self) -> (u64, u64) {
        (
            self.pending_n + self.done.len() as u64,
            self.pending_b + self.done_bytes,
        )
    }

    pub fn persist(&self, batch: &mut Batch) {
        let (n, b) = self.restart_depth();
        let mut v = keys::pair(self.cursor, n);
        v.extend_from_slice(&b.to_be_bytes());
        batch.put(keys::cursor(&self.name), v);
    }
}

pub(crate) struct State {
    pub next_seq: u64,
    pub live_n: u64,
    pub live_b: u64,
    pub next_fid: u64,
    pub fail_n: u64,
    pub ages: AgeClock,
    pub sinks: Vec<SinkState>,
    /// Set when cursors or counters changed without being written.
    pub dirty: bool,
}

impl State {
    /// Adds the counters and the clock checkpoint to `batch`.
    pub fn persist_meta(&mut self, batch: &mut Batch) {
        batch.put(keys::NEXT.to_vec(), self.next_seq.to_be_bytes().to_vec());
        batch.put(keys::LIVE.to_vec(), keys::pair(self.live_n, self.live_b));
        batch.put(keys::FAILS.to_vec(), keys::pair(self.next_fid, self.fail_n));
        batch.put(keys::CLOCK.to_vec(), self.ages.checkpoint().encode());
    }

    /// The lowest cursor: everything below is done for every sink.
    pub fn min_cursor(&self) -> u64 {
        self.sinks
            .iter()
            .map(|s| s.cursor)
            .min()
            .unwrap_or(self.next_seq)
    }
}

/// The shared outbox core.
pub struct Core {
    pub(crate) storage: Arc<dyn Storage>,
    state: Mutex<State>,
    /// Taken before the state lock by everything that applies a batch.
    order: Mutex<()>,
    durable: watch::Sender<u64>,
    pub(crate) settings: Settings,
    pub(crate) disk_bytes: AtomicU64,
    pub(crate) counters: Counters,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} is malformed"))
}

impl Core {
    /// Loads the counters and cursors for `sinks` (the hub first, then
    /// webhooks by name). A sink seen for the first time starts at the
    /// next new message; cursors of sinks no longer configured are removed.
    ///
    /// # Errors
    /// On I/O errors, or [`StoreError::Corrupt`] when a counter is unreadable.
    pub fn load(
        storage: Arc<dyn Storage>,
        sinks: &[String],
        settings: Settings,
        clock: SharedClock,
    ) -> Result<Self, StoreError> {
        let get_u64s = |key: &[u8]| -> Result<Option<[u64; 2]>, StoreError> {
            storage
                .get(key)?
                .map(|v| keys::u64s::<2>(&v).ok_or_else(|| corrupt(&String::from_utf8_lossy(key))))
                .transpose()
        };
        let last = storage.scan(&[keys::MSG], &[keys::MSG + 1], 1, true)?;
        let after_last = last
            .first()
            .and_then(|(k, _)| keys::number(k))
            .map_or(1, |n| n + 1);
        let next = match storage.get(keys::NEXT)? {
            Some(v) => keys::u64s::<1>(&v).ok_or_else(|| corrupt("k:next"))?[0],
            None => 1,
        };
        let next_seq = next.max(after_last);
        let [live_n, live_b] = get_u64s(keys::LIVE)?.unwrap_or([0, 0]);
        let [next_fid, fail_n] = get_u64s(keys::FAILS)?.unwrap_or([1, 0]);
        let cap = settings.ttl.max(settings.failure_ttl);
        let checkpoint = match storage.get(keys::CLOCK)? {
            Some(v) => Checkpoint::decode(&v).ok_or_else(|| corrupt("k:clock"))?,
            // A new store's clock starts one cap in, not at 0, so records
            // imported from another store (salvage) can be stamped up to
            // one cap back.
            None => Checkpoint {
                store_ms: cap.as_millis().min(u128::from(u64::MAX)) as u64,
                ..Checkpoint::default()
            },
        };
        let ages = AgeClock::resume(clock, Some(checkpoint), cap);
        let mut batch = Batch::default();
        for (k, _) in storage.scan(b"c:", b"c;", usize::MAX, false)? {
            let name = String::from_utf8_lossy(&k[2..]).to_string();
            if !sinks.contains(&name) {
                tracing::info!(sink = %name, "forgetting the cursor of a sink no longer configured");
                batch.del(k);
            }
        }
        let mut states = Vec::with_capacity(sinks.len());
        for name in sinks {
            let (cursor, pending_n, pending_b) = match storage.get(&keys::cursor(name))? {
                Some(v) => {
                    let [c, n, b] = keys::u64s::<3>(&v).ok_or_else(|| corrupt("a sink cursor"))?;
                    (c, n, b)
                }
                None => (next_seq, 0, 0),
            };
            states.push(SinkState {
                name: name.clone(),
                cursor,
                done: BTreeMap::new(),
                done_bytes: 0,
                pending_n,
                pending_b,
                last_error: None,
                counters: SinkCounters::default(),
            });
        }
        let mut state = State {
            next_seq,
            live_n,
            live_b,
            next_fid,
            fail_n,
            ages,
            sinks: states,
            dirty: false,
        };
        for s in &state.sinks {
            s.persist(&mut batch);
        }
        state.persist_meta(&mut batch);
        storage.apply(batch)?;
        storage.sync()?;
        let disk = storage.disk_bytes();
        Ok(Self {
            storage,
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

    /// Serialises the writers: each builds its batch (with the counters it
    /// persists) under the state lock and applies it under this one, so
    /// batches reach the store in the order their counters were taken. A
    /// writer may then apply after releasing the state lock, and the sinks,
    /// which need only the state lock, do not wait for the store. Always
    /// taken before the state lock.
    pub(crate) fn write_order(&self) -> MutexGuard<'_, ()> {
        self.order.lock().unwrap_or_else(PoisonError::into_inner)
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
        self.lock().sinks.iter().map(|s| s.name.clone()).collect()
    }

    /// The id of the sink called `name`.
    pub fn sink_id(&self, name: &str) -> Option<SinkId> {
        self.lock().sinks.iter().position(|s| s.name == name)
    }

    /// The sink's cursor (where a restarted sink resumes).
    pub fn cursor(&self, sink: SinkId) -> u64 {
        self.lock().sinks[sink].cursor
    }

    /// Up to `limit` durable messages after `after` still to be done for
    /// `sink`, in order, and at most [`READ_BYTES`] of them (at least one).
    /// Messages addressed to another sink are marked done on the way.
    ///
    /// # Errors
    /// On storage errors.
    pub fn read(&self, sink: SinkId, after: u64, limit: usize) -> Result<Vec<Stored>, StoreError> {
        let (from, to) = {
            let st = self.lock();
            (st.sinks[sink].cursor.max(after + 1), *self.durable.borrow())
        };
        if from >= to {
            return Ok(Vec::new());
        }
        let rows = self.storage.scan(
            &keys::numbered(keys::MSG, from),
            &keys::numbered(keys::MSG, to),
            limit,
            false,
        )?;
        let mut st = self.lock();
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0;
        for (k, v) in rows {
            if bytes >= READ_BYTES {
                break;
            }
            let Some(seq) = keys::number(&k) else {
                continue;
            };
            let s = &mut st.sinks[sink];
            if s.is_done(seq) {
                continue;
            }
            match Stored::decode(seq, &v) {
                Ok(m) if m.only_sink.as_ref().is_some_and(|o| *o != s.name) => {
                    s.mark_done(seq, v.len() as u64);
                    st.dirty = true;
                }
                Ok(m) => {
                    bytes += m.body.len();
                    out.push(m);
                }
                Err(e) => {
                    tracing::error!(seq, error = %e, "skipping an unreadable outbox record");
                    for s in &mut st.sinks {
                        s.mark_done(seq, v.len() as u64);
                    }
                    st.dirty = true;
                }
            }
        }
        Ok(out)
    }

    /// Records that `sink` delivered these `(seq, bytes)`; returns how many
    /// were not already done (expired or dropped meanwhile).
    pub fn delivered(&self, sink: SinkId, msgs: &[(u64, u64)]) -> usize {
        let mut st = self.lock();
        let s = &mut st.sinks[sink];
        let n = msgs.iter().filter(|(seq, b)| s.mark_done(*seq, *b)).count();
        s.counters.delivered += n as u64;
        s.last_error = None;
        st.dirty |= n > 0;
        n
    }

    /// Removes, among the first `n` of `msgs`, those `sink` no longer has
    /// to deliver (expired or dropped since they were read). One lock for
    /// the lot.
    pub fn drop_done(&self, sink: SinkId, msgs: &mut VecDeque<Stored>, n: usize) {
        let st = self.lock();
        let s = &st.sinks[sink];
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
        self.lock().sinks[sink].is_done(seq)
    }

    /// Remembers why `sink` is not delivering (for failures and stats).
    pub fn set_error(&self, sink: SinkId, error: Option<String>) {
        self.lock().sinks[sink].last_error = error;
    }

    /// Counts messages sent again after a lost connection or timeout.
    pub fn count_duplicates(&self, sink: SinkId, n: u64) {
        self.lock().sinks[sink].counters.duplicates += n;
    }

    /// Messages stored.
    pub fn live_messages(&self) -> u64 {
        self.lock().live_n
    }

    /// What start found lost with the store (set aside, replaced,
    /// truncated), if anything.
    pub fn store_loss(&self) -> Option<String> {
        self.counters.store_loss()
    }

    /// The size on disk, as last measured.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }

    /// Measures the size on disk again.
    pub fn refresh_disk_bytes(&self) -> u64 {
        let d = self.storage.disk_bytes();
        self.disk_bytes.store(d, Ordering::Relaxed);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::outbox::message::NewMessage;
    use crate::outbox::store::SledStorage;

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
        let appended = core.append(vec![crate::outbox::append::Request::New(msgs)]);
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
}
