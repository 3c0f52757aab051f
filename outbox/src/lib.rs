//! tether-outbox: the durable store of tether's outgoing messages. Every
//! message the daemon accepts reaches each sink (the hub, optional
//! webhooks) or becomes a push failure that the admin API lists, deletes
//! and replays. This crate is the store and its bookkeeping; the delivery
//! tasks, the admin routes and metrics, and the CLI are the daemon's
//! (`tether`'s `outbox` module). It has no hub, admin or HTTP code.
//!
//! Map of the crate:
//! - [`message`]: messages on their way in (Afero attribute messages are
//!   `tether_protocol::afero`'s), the checks before storing, records.
//! - [`store`]: the storage trait, the engines (hardened sled, redb),
//!   opening, format versions; `migrate` converts a format-1 store (one
//!   key per message).
//! - `keys`: the key layout; `segment`: the messages of one group
//!   commit under one key (store format 2).
//! - `ledger`: the pure bookkeeping (counters, per-sink cursors and done
//!   ranges, capacity policy, expiry, failure recording, compaction): events
//!   and time in, batches and outcomes out. [`Core`] is the thin
//!   shell that locks it, applies its batches in order and reads segments
//!   for the sinks; `append`, `maintain` and `failures` are its entry
//!   points for intake, upkeep and the failure API (`failure_record` the
//!   records, `failure_id` their UUIDs); `ages` the age clock.
//! - `highwater`: the record outside the store that notices messages
//!   lost between runs in ways the engine does not report.
//! - `intake`: group commit (one writer thread, one sync per group).
//! - `counters`: what the core and the ledger count, for the daemon's
//!   `/metrics` and `/healthz`.
//! - [`salvage`]: importing the readable records of a set-aside (or copied)
//!   store into the running one, in the background.
//! - [`config`]: the `[store]` settings; [`clock`]: injected wall-clock
//!   time (the daemon's too).
//!
//! Design notes:
//! - *Accepted means durable*: intake answers only after the group's batch
//!   was applied, `flush()`ed and `fdatasync`ed; sinks read only below the
//!   durable watermark, so nothing that could still be rolled back is sent.
//! - *Segments, not one key per message* (format 2): a group commit writes
//!   its messages as segments (up to 64 messages or 4 KiB of records
//!   each, LZ4-compressed), so the engine's index and memory
//!   follow the segments in flight, not the backlog. A segment is deleted
//!   once every sink's cursor is past it.
//! - *At least once*: a message leaves a sink's queue on its PUBACK (hub)
//!   or 2xx (webhook). Each sink persists its cursor and the ranges it
//!   finished above it (up to 32), so out-of-order acknowledgements are
//!   not sent again after a restart; everything else above the cursor is
//!   (with the same id, counted as duplicates).
//! - *Capacity*: the live data (records, uncompressed) may take half of
//!   `store.max_bytes`; in addition, when the size on disk reaches
//!   `store.max_bytes` while the live data is above 1/8 of it, the store
//!   counts as full. `drop-oldest` then drops the oldest segments, at
//!   least the incoming bytes (the engine reuses the freed space, so the
//!   disk stops growing); `reject-new` answers 503 with `Retry-After`.
//! - *Ages* follow a persisted monotonic store clock, not the wall clock:
//!   see `ages`.

#![forbid(unsafe_code)]

mod ages;
mod append;
pub mod clock;
pub mod config;
mod core;
mod counters;
mod failure_id;
mod failure_record;
mod failures;
mod highwater;
mod intake;
mod keys;
mod ledger;
mod maintain;
pub mod message;
mod migrate;
pub mod salvage;
mod segment;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use self::clock::{unix_seconds, SharedClock};
use self::config::StoreConfig;
use self::highwater::HighWater;

pub use self::append::{IntakeError, Receipt};
pub(crate) use self::core::Settings;
pub use self::core::{Core, SinkId, READ_BYTES};
pub use self::counters::{Counters, Totals};
pub use self::failure_id::FailureIds;
pub use self::failure_record::{FailureRow, PushFailure};
pub use self::intake::Intake;
pub use self::maintain::{SinkStats, Stats};
pub use self::message::NewMessage;
pub use self::store::StoreError;

/// The hub's sink name (`partnerId` of its failures).
pub const HUB_SINK: &str = "hub";
/// Longest pause between upkeep rounds (expiry, compaction, purge).
const UPKEEP_EVERY: Duration = Duration::from_millis(100);

/// The outbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The store cannot be opened.
    #[error("store.path {path}: {source}")]
    Store {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The writer thread could not start.
    #[error("cannot start the outbox writer: {0}")]
    Thread(#[from] std::io::Error),
}

/// An open outbox: the core and the intake.
pub struct Outbox {
    /// Shared state and operations.
    pub core: Arc<Core>,
    /// The in-process intake API.
    pub intake: Intake,
    high_water: Option<Arc<HighWater>>,
}

/// Settings derived from `[store]`: what [`Outbox::open`] runs with.
fn settings(cfg: &StoreConfig) -> Settings {
    Settings {
        ttl: cfg.ttl,
        failure_ttl: cfg.failure_ttl,
        max_bytes: cfg.max_bytes,
        full_policy: cfg.full_policy,
    }
}

impl Outbox {
    /// Opens the store in `cfg.path` (moving an unusable one aside) with
    /// the sinks `hub` + `webhooks`, and starts the writer thread.
    /// `progress` is called every few seconds while a long step runs before
    /// the store is ready (a format migration), so a supervisor waiting for
    /// the start can be told it is not hung.
    ///
    /// # Errors
    /// When the store cannot be opened (I/O, permissions) or the thread
    /// cannot start.
    pub fn open(
        cfg: &StoreConfig,
        webhooks: &[String],
        clock: SharedClock,
        progress: &dyn Fn(),
    ) -> Result<Self, OutboxError> {
        let sinks = sink_names(webhooks);
        let settings = settings(cfg);
        let now = unix_seconds(clock.now());
        let record = highwater::read(&cfg.path).unwrap_or_else(|e| {
            error!(error = %e, "the outbox high-water record is unusable");
            None
        });
        let opened = store::open(
            &cfg.path,
            cfg.engine,
            cfg.cache_bytes,
            now,
            progress,
            |storage| {
                let verdict = highwater::reconcile(storage.as_ref(), record.as_ref())?;
                Ok((
                    Core::load(storage, &sinks, settings.clone(), clock.clone())?,
                    verdict,
                ))
            },
        )
        .map_err(|source| OutboxError::Store {
            path: cfg.path.clone(),
            source,
        })?;
        let (core, verdict) = opened.value;
        // A power cut after an earlier run set the store aside, before the
        // record named the new store, leaves the record naming the set-aside
        // one: its messages are not gone, salvage imports them.
        let aside_earlier = verdict.replaced && !salvage::run::pending(&cfg.path).is_empty();
        match (&opened.moved_aside, verdict.loss) {
            // Salvage reports what the set-aside store still held.
            (Some(_), _) => {}
            (None, Some(_)) if aside_earlier => info!(
                "the outbox high-water record names the store an earlier run set aside; its \
                 messages are salvaged into this one, and salvage reports what it held"
            ),
            (None, Some(loss)) => {
                error!("{loss}; tether continues with what the store still holds");
                core.counters.store_lost(loss);
            }
            (None, None) => {}
        }
        let high_water = HighWater::new(cfg.path.clone(), verdict.store_id);
        high_water.update(&core, true);
        Self::start(core, Some(Arc::new(high_water)))
    }

    /// An outbox over any [`store::Storage`], with the sinks `hub` +
    /// `webhooks`, for the crate's tests: a storage other than the engines
    /// [`Outbox::open`] picks (one that fails on demand), or an engine
    /// opened without the rest of `open`. The caller owns the storage:
    /// nothing is moved aside or migrated, and there is no high-water
    /// record.
    ///
    /// # Errors
    /// When loading fails or the thread cannot start.
    #[cfg(test)]
    pub(crate) fn with_storage(
        storage: Arc<dyn store::Storage>,
        settings: Settings,
        webhooks: &[String],
        clock: SharedClock,
    ) -> Result<Self, OutboxError> {
        let core =
            Core::load(storage, &sink_names(webhooks), settings, clock).map_err(|source| {
                OutboxError::Store {
                    path: PathBuf::new(),
                    source,
                }
            })?;
        Self::start(core, None)
    }

    fn start(core: Core, high_water: Option<Arc<HighWater>>) -> Result<Self, OutboxError> {
        let core = Arc::new(core);
        let (intake, _writer) = intake::spawn_writer(core.clone())?;
        Ok(Self {
            core,
            intake,
            high_water,
        })
    }

    /// The upkeep of this outbox, for a task that runs its rounds.
    pub fn upkeep(&self) -> Upkeep {
        Upkeep {
            core: self.core.clone(),
            high_water: self.high_water.clone(),
        }
    }
}

/// Continuous expiry, compaction, failure purging, the disk-size
/// measurement and the high-water record of an open outbox, a round at a
/// time: the daemon's upkeep task calls [`Upkeep::round`] at the pace it
/// asks for, and once more with `last` when it stops.
#[derive(Clone)]
pub struct Upkeep {
    core: Arc<Core>,
    high_water: Option<Arc<HighWater>>,
}

impl Upkeep {
    /// One round of upkeep; returns how long to wait before the next. The
    /// high-water record is updated last, after the round's sync; `last`
    /// (the clean stop) writes it regardless of its rate limit.
    pub async fn round(&self, last: bool) -> Duration {
        let c = self.core.clone();
        let high_water = self.high_water.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Duration, StoreError> {
            let wait = c.expire(UPKEEP_EVERY)?;
            c.purge_failures(1024)?;
            if c.compact()? {
                c.storage.sync()?;
            }
            c.refresh_disk_bytes();
            if let Some(h) = high_water {
                h.update(&c, last);
            }
            Ok(wait)
        })
        .await;
        match result {
            Ok(Ok(wait)) => wait,
            Ok(Err(e)) => {
                warn!(error = %e, "outbox upkeep failed; retrying");
                Duration::from_secs(1)
            }
            Err(e) => {
                warn!(error = %e, "outbox upkeep task failed");
                Duration::from_secs(1)
            }
        }
    }
}

fn sink_names(webhooks: &[String]) -> Vec<String> {
    std::iter::once(HUB_SINK.to_string())
        .chain(webhooks.iter().cloned())
        .collect()
}
