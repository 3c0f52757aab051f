//! The durable outbox: every message tether accepts reaches each sink (the
//! hub, optional webhooks) or becomes a push failure that the admin API
//! lists, deletes and replays.
//!
//! - [`message`]: messages on their way in (Afero attribute messages are
//!   `tether_protocol::afero`'s), the checks before storing, records.
//! - [`store`]: the storage trait, the hardened sled engine, format versions;
//!   `migrate` converts a format-1 store (one key per message).
//! - [`keys`]: the key layout; [`segment`]: the messages of one group
//!   commit under one key (store format 2).
//! - `ledger`: the pure bookkeeping (counters, per-sink cursors and done
//!   ranges, capacity policy, expiry, failure recording, compaction): events
//!   and time in, batches and outcomes out. `core` is the thin
//!   shell that locks it, applies its batches in order and reads segments;
//!   `append`, `maintain` and `failures` are its entry
//!   points for intake, upkeep and the failure API (`failure_record` the
//!   records, `failure_id` their UUIDs); [`ages`] the age clock.
//! - [`highwater`]: the record outside the store that notices messages
//!   lost between runs in ways the engine does not report.
//! - `intake`: group commit (one writer thread, one sync per group).
//! - `hub_sink`, `webhook`: delivery tasks, one per sink.
//! - `counters`: what the core and the ledger count; [`metrics`]: those
//!   counts as Prometheus text and `/healthz`; [`cli`]: the CLI's client.
//! - [`salvage`]: importing the readable records of a set-aside (or copied)
//!   store into the running one, in the background.
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
//!   see [`ages`].

pub mod ages;
pub(crate) mod append;
pub mod cli;
pub(crate) mod core;
pub(crate) mod counters;
pub(crate) mod failure_id;
pub(crate) mod failure_record;
pub(crate) mod failures;
pub mod highwater;
pub(crate) mod hub_sink;
pub(crate) mod intake;
pub mod keys;
pub(crate) mod ledger;
mod maintain;
pub mod message;
pub mod metrics;
mod migrate;
pub(crate) mod pacing;
pub mod salvage;
pub mod segment;
pub mod store;
pub(crate) mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::clock::{unix_seconds, SharedClock};
use crate::config::StoreConfig;
use crate::hub::{Delivery, HubHandle};
use crate::service::Beat;

use self::highwater::HighWater;

pub use self::append::{IntakeError, Receipt};
pub use self::core::{Core, Settings, SinkId};
pub use self::failure_id::FailureIds;
pub use self::failure_record::{FailureRow, PushFailure};
pub use self::hub_sink::HubSinkOptions;
pub use self::intake::Intake;
pub use self::maintain::{SinkStats, Stats};
pub use self::message::NewMessage;
pub use self::store::{Storage, StoreError};
pub use self::webhook::{WebhookConfig, WebhookError};

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

/// An open outbox: the core, the intake, and what starting found.
pub struct Outbox {
    /// Shared state and operations.
    pub core: Arc<Core>,
    /// The in-process intake API.
    pub intake: Intake,
    /// Set when an unusable store was moved aside at start.
    pub moved_aside: Option<PathBuf>,
    high_water: Option<Arc<HighWater>>,
}

/// Settings derived from `[store]`.
pub fn settings(cfg: &StoreConfig) -> Settings {
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
    ///
    /// # Errors
    /// When the store cannot be opened (I/O, permissions) or the thread
    /// cannot start.
    pub fn open(
        cfg: &StoreConfig,
        webhooks: &[String],
        clock: SharedClock,
    ) -> Result<Self, OutboxError> {
        let sinks = sink_names(webhooks);
        let settings = settings(cfg);
        let now = unix_seconds(clock.now());
        let record = highwater::read(&cfg.path).unwrap_or_else(|e| {
            error!(error = %e, "the outbox high-water record is unusable");
            None
        });
        let opened = store::open(&cfg.path, cfg.engine, cfg.cache_bytes, now, |storage| {
            let verdict = highwater::reconcile(storage.as_ref(), record.as_ref())?;
            Ok((
                Core::load(storage, &sinks, settings.clone(), clock.clone())?,
                verdict,
            ))
        })
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
        Self::start(core, opened.moved_aside, Some(Arc::new(high_water)))
    }

    /// An outbox over any [`Storage`] (tests inject failures this way).
    ///
    /// # Errors
    /// When loading fails or the thread cannot start.
    pub fn with_storage(
        storage: Arc<dyn Storage>,
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
        Self::start(core, None, None)
    }

    fn start(
        core: Core,
        moved_aside: Option<PathBuf>,
        high_water: Option<Arc<HighWater>>,
    ) -> Result<Self, OutboxError> {
        let core = Arc::new(core);
        let (intake, _writer) = intake::spawn_writer(core.clone())?;
        Ok(Self {
            core,
            intake,
            moved_aside,
            high_water,
        })
    }

    /// Starts delivery to the hub; `deliveries` is the session's notice
    /// receiver (this task is its only consumer).
    pub fn spawn_hub_sink(
        &self,
        hub: HubHandle,
        deliveries: mpsc::Receiver<Delivery>,
        options: HubSinkOptions,
        beat: Beat,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let sink = hub_sink::HubSink {
            core: self.core.clone(),
            sink: 0,
            hub,
            deliveries,
            options,
            beat,
            shutdown,
        };
        tokio::spawn(sink.run())
    }

    /// Starts delivery to one webhook.
    ///
    /// # Errors
    /// When its URL, headers or CA file are unusable, or it was not among
    /// the sinks the outbox was opened with.
    pub fn spawn_webhook(
        &self,
        cfg: WebhookConfig,
        beat: Beat,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, WebhookError> {
        let sink = self
            .core
            .sink_id(&cfg.name)
            .ok_or_else(|| WebhookError::Invalid {
                name: cfg.name.clone(),
                reason: "not registered with the outbox".into(),
            })?;
        let hook = webhook::Webhook::new(cfg)?;
        Ok(tokio::spawn(webhook::run(
            hook,
            self.core.clone(),
            sink,
            beat,
            shutdown,
        )))
    }

    /// Starts the upkeep task: continuous expiry, compaction, failure
    /// purging, the disk-size measurement and the high-water record. It
    /// syncs and writes the record one last time when `shutdown` fires.
    pub fn spawn_upkeep(&self, beat: Beat, shutdown: CancellationToken) -> JoinHandle<()> {
        let core = self.core.clone();
        let high_water = self.high_water.clone();
        tokio::spawn(async move {
            loop {
                beat.beat_expecting(Duration::from_secs(60));
                let wait = upkeep_round(&core, high_water.clone(), false).await;
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => break,
                }
            }
            let _ = upkeep_round(&core, high_water, true).await;
        })
    }
}

fn sink_names(webhooks: &[String]) -> Vec<String> {
    std::iter::once(HUB_SINK.to_string())
        .chain(webhooks.iter().cloned())
        .collect()
}

/// One round of upkeep; returns how long to wait before the next. The
/// high-water record is updated last, after the round's sync; `last` (the
/// clean stop) writes it regardless of its rate limit.
async fn upkeep_round(
    core: &Arc<Core>,
    high_water: Option<Arc<HighWater>>,
    last: bool,
) -> Duration {
    let c = core.clone();
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
