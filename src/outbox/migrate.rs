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

use super::keys;
use super::message::Stored;
use super::segment;
use super::store::{Batch, Storage, StoreError};

/// Messages converted per atomic step (about 1 MiB of records).
const STEP: usize = 4096;
/// How often systemd is asked for more start-up time meanwhile.
const EXTEND_EVERY: Duration = Duration::from_secs(2);
/// How much more each time.
const EXTEND_BY: Duration = Duration::from_secs(30);

/// Converts every `m` key to segments; `finish` is added to the final
/// batch (the format version).
///
/// # Errors
/// On storage errors; what was converted so far stays converted.
pub(crate) fn one_to_two(storage: &dyn Storage, finish: Batch) -> Result<(), StoreError> {
    let mut converted = match storage.get(keys::MIGRATED)? {
        Some(v) => keys::u64s::<1>(&v).map_or(0, |[n]| n),
        None => 0,
    };
    let [mut live_n, mut live_b] = storage
        .get(keys::LIVE)?
        .and_then(|v| keys::u64s::<2>(&v))
        .unwrap_or([0, 0]);
    let started = Instant::now();
    let mut extended = started;
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
        if extended.elapsed() >= EXTEND_EVERY {
            crate::service::notify::extend_timeout(EXTEND_BY);
            extended = Instant::now();
        }
    }
}
