//! Migration of a format-1 store (one `m` key per message) to format 2
//! (segments, see [`super::segment`]), in bounded atomic steps: each batch
//! deletes a run of `m` keys, writes their segments and the progress key,
//! and is synced; the final batch sets format 2. A kill at any moment
//! leaves a format-1 store whose messages are each either still an `m`
//! key or already in a segment, never both, never neither; the next start
//! resumes where the last synced step ended. Cursors and counters keep
//! their meaning (format 2 only adds done ranges after a cursor's 24
//! bytes), so they are not rewritten.

use std::time::{Duration, Instant};

use crate::keys;
use crate::message::Stored;
use crate::segment;
use crate::store::{Batch, Storage, StoreError};

/// Messages converted per atomic step (about 1 MiB of records).
const STEP: usize = 4096;
/// How often `progress` is called meanwhile (the daemon asks systemd for
/// more start-up time).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Converts every `m` key to segments; `finish` is added to the final
/// batch (the format version). `progress` is called every
/// [`PROGRESS_EVERY`].
///
/// # Errors
/// On storage errors; what was converted so far stays converted.
pub(crate) fn one_to_two(
    storage: &dyn Storage,
    finish: Batch,
    progress: &dyn Fn(),
) -> Result<(), StoreError> {
    let mut converted = match storage.get(keys::MIGRATED)? {
        Some(v) => keys::u64s::<1>(&v).map_or(0, |[n]| n),
        None => 0,
    };
    let [mut live_n, mut live_b] = storage
        .get(keys::LIVE)?
        .and_then(|v| keys::u64s::<2>(&v))
        .unwrap_or([0, 0]);
    let started = Instant::now();
    let mut reported = started;
    let mut logged = false;
    loop {
        let rows = storage.scan(&[keys::MSG_V1], &[keys::MSG_V1 + 1], STEP, false)?;
        let mut batch = Batch::default();
        if rows.is_empty() {
            batch.ops.extend(finish.ops);
            batch.del(keys::MIGRATED.to_vec());
            storage.apply(batch)?;
            storage.sync()?;
            if logged {
                tracing::info!(
                    messages = converted,
                    took_ms = started.elapsed().as_millis() as u64,
                    "the outbox store is migrated to format 2"
                );
            }
            return Ok(());
        }
        if !logged {
            tracing::info!(
                messages = live_n,
                already = converted,
                "migrating the outbox store to format 2 (segments); tether is ready when it is done"
            );
            logged = true;
        }
        let mut records = Vec::with_capacity(rows.len());
        for (k, v) in &rows {
            batch.del(k.clone());
            match keys::number(k)
                .ok_or_else(|| "bad key".to_string())
                .and_then(|seq| Stored::decode(seq, v))
            {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::error!(error = %e, "dropping an unreadable format-1 outbox record while migrating");
                    live_n = live_n.saturating_sub(1);
                    live_b = live_b.saturating_sub(v.len() as u64);
                    batch.put(keys::LIVE.to_vec(), keys::pair(live_n, live_b));
                }
            }
        }
        for part in segment::cut(&records) {
            let (key, value) = segment::encode(part);
            batch.put(key.encode(), value);
        }
        converted += rows.len() as u64;
        batch.put(keys::MIGRATED.to_vec(), converted.to_be_bytes().to_vec());
        storage.apply(batch)?;
        storage.sync()?;
        if reported.elapsed() >= PROGRESS_EVERY {
            progress();
            reported = Instant::now();
        }
    }
}

/// A tiny format-1 writer, for tests of the migration.
#[cfg(test)]
pub(crate) mod v1 {
    use super::*;

    /// Writes `n` messages (seqs `1..=n`, with `skip` missing) the way
    /// format 1 did, a cursor for `hub` at `cursor`, and the counters.
    pub(crate) fn write(storage: &dyn Storage, n: u64, skip: &[u64], cursor: u64) -> Vec<Stored> {
        let mut batch = Batch::default();
        let mut msgs = Vec::new();
        let (mut live_n, mut live_b) = (0, 0);
        for seq in (1..=n).filter(|s| !skip.contains(s)) {
            let m = Stored {
                seq,
                id: uuid::Uuid::new_v4(),
                message_type: "attribute".into(),
                utc_ms: 1_700_000_000_000 + seq,
                accepted_ms: seq,
                only_sink: None,
                body: format!(r#"{{"n":{seq},"pad":"{}"}}"#, "x".repeat(120)).into_bytes(),
            };
            let v = m.encode();
            live_n += 1;
            live_b += v.len() as u64;
            batch.put(keys::numbered(keys::MSG_V1, seq).to_vec(), v);
            msgs.push(m);
        }
        batch.put(keys::NEXT.to_vec(), (n + 1).to_be_bytes().to_vec());
        batch.put(keys::LIVE.to_vec(), keys::pair(live_n, live_b));
        let mut c = keys::pair(cursor, live_n);
        c.extend_from_slice(&live_b.to_be_bytes());
        batch.put(keys::cursor("hub"), c);
        batch.put(b"k:format".to_vec(), 1u32.to_be_bytes().to_vec());
        storage.apply(batch).unwrap();
        storage.sync().unwrap();
        msgs
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::keys::SegKey;
    use crate::store::mem::MemStorage;
    use crate::store::Rows;

    /// Every message in the segments, in order.
    fn segment_messages(storage: &dyn Storage) -> Vec<Stored> {
        storage
            .scan(&[keys::SEG], &keys::SEG_END, usize::MAX, false)
            .unwrap()
            .into_iter()
            .flat_map(|(k, v)| {
                segment::decode(SegKey::decode(&k).unwrap(), &v)
                    .unwrap()
                    .records
            })
            .collect()
    }

    fn finish() -> Batch {
        let mut b = Batch::default();
        b.put(b"k:format".to_vec(), 2u32.to_be_bytes().to_vec());
        b
    }

    /// A store that dies (refuses every write) after `left` batches: a
    /// kill between two steps.
    struct Dies {
        inner: std::sync::Arc<MemStorage>,
        left: AtomicUsize,
    }

    impl Storage for Dies {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }
        fn scan(&self, f: &[u8], t: &[u8], n: usize, r: bool) -> Result<Rows, StoreError> {
            self.inner.scan(f, t, n, r)
        }
        fn apply(&self, batch: Batch) -> Result<(), StoreError> {
            if self.left.fetch_sub(1, Ordering::SeqCst) == 0 {
                return Err(StoreError::Engine("killed".into()));
            }
            self.inner.apply(batch)
        }
        fn sync(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn disk_bytes(&self) -> u64 {
            0
        }
    }

    #[test]
    fn every_message_moves_into_segments_once_in_order_with_its_fields() {
        let store = MemStorage::default();
        let msgs = v1::write(&store, 10_000, &[17, 5000], 3);
        one_to_two(&store, finish(), &|| {}).unwrap();
        assert!(store
            .scan(&[keys::MSG_V1], &[keys::MSG_V1 + 1], 1, false)
            .unwrap()
            .is_empty());
        assert_eq!(segment_messages(&store), msgs);
        assert_eq!(
            store.get(b"k:format").unwrap(),
            Some(2u32.to_be_bytes().to_vec())
        );
        assert_eq!(store.get(keys::MIGRATED).unwrap(), None);
    }

    #[test]
    fn a_migration_killed_after_any_step_finishes_on_the_next_start_with_nothing_lost_or_doubled() {
        for kill_after in 0..4 {
            let store = std::sync::Arc::new(MemStorage::default());
            let msgs = v1::write(store.as_ref(), 3 * STEP as u64 + 10, &[], 1);
            let dying = Dies {
                inner: store.clone(),
                left: AtomicUsize::new(kill_after),
            };
            assert!(one_to_two(&dying, finish(), &|| {}).is_err());
            assert_eq!(
                store.get(b"k:format").unwrap(),
                Some(1u32.to_be_bytes().to_vec()),
                "still format 1 until the last step"
            );
            let mut seen = segment_messages(store.as_ref());
            seen.extend(
                store
                    .scan(&[keys::MSG_V1], &[keys::MSG_V1 + 1], usize::MAX, false)
                    .unwrap()
                    .iter()
                    .map(|(k, v)| Stored::decode(keys::number(k).unwrap(), v).unwrap()),
            );
            assert_eq!(seen, msgs, "killed after {kill_after}: every message once");
            one_to_two(store.as_ref(), finish(), &|| {}).unwrap();
            assert_eq!(
                segment_messages(store.as_ref()),
                msgs,
                "killed after {kill_after}"
            );
        }
    }
}
