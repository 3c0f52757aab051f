//! The daemon's side of the durable outbox. The store itself (the ledger,
//! the engines, the intake's group commit, salvage) is the `tether-outbox`
//! crate (`outbox/`), which knows nothing of the hub, HTTP or the admin
//! API; this module connects it to them:
//!
//! - `hub_sink`, `webhook`: delivery tasks, one per sink (`pacing` paces
//!   the hub's), reading from the outbox's [`Core`](tether_outbox::Core) and
//!   reporting back.
//! - `metrics`: the outbox's counts as Prometheus text and `/healthz`.
//! - [`cli`]: the client side of `tether failures ...` and `tether outbox
//!   ...`.
//! - `spawn_upkeep`: the task that runs the outbox's upkeep rounds.

pub mod cli;
pub(crate) mod hub_sink;
pub(crate) mod metrics;
pub(crate) mod pacing;
pub(crate) mod webhook;

use std::time::Duration;

use tether_outbox::Outbox;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hub::{Delivery, HubHandle};
use crate::service::Beat;

pub(crate) use self::hub_sink::HubSinkOptions;
pub(crate) use self::webhook::{WebhookConfig, WebhookError};

/// Starts delivery to the hub; `deliveries` is the session's notice
/// receiver (this task is its only consumer).
pub(crate) fn spawn_hub_sink(
    outbox: &Outbox,
    hub: HubHandle,
    deliveries: mpsc::Receiver<Delivery>,
    options: HubSinkOptions,
    beat: Beat,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let sink = hub_sink::HubSink {
        core: outbox.core.clone(),
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
pub(crate) fn spawn_webhook(
    outbox: &Outbox,
    cfg: WebhookConfig,
    beat: Beat,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, WebhookError> {
    let sink = outbox
        .core
        .sink_id(&cfg.name)
        .ok_or_else(|| WebhookError::Invalid {
            name: cfg.name.clone(),
            reason: "not registered with the outbox".into(),
        })?;
    let hook = webhook::Webhook::new(cfg)?;
    Ok(tokio::spawn(webhook::run(
        hook,
        outbox.core.clone(),
        sink,
        beat,
        shutdown,
    )))
}

/// Starts the upkeep task: continuous expiry, compaction, failure
/// purging, the disk-size measurement and the high-water record (see
/// [`tether_outbox::Upkeep`]). It syncs and writes the record one last
/// time when `shutdown` fires.
pub(crate) fn spawn_upkeep(
    outbox: &Outbox,
    beat: Beat,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let upkeep = outbox.upkeep();
    tokio::spawn(async move {
        loop {
            beat.beat_expecting(Duration::from_secs(60));
            let wait = upkeep.round(false).await;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => break,
            }
        }
        let _ = upkeep.round(true).await;
    })
}
