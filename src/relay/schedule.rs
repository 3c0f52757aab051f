//! Scheduled calls (`[[relay.schedule]]`): each entry runs on its period
//! through the same pipeline as cloud calls, and its answer goes upstream
//! as a [`ScheduleResult`] on a bounded channel (wired to the outbox).
//!
//! The first run is one period after start, not at start: a restarting
//! daemon then does not burst every schedule at a controller that may
//! itself be booting. Missed ticks are skipped, not replayed.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::ScheduleConfig;

use super::Relay;

/// One scheduled call's outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScheduleResult {
    /// The schedule's `name`.
    pub name: String,
    /// When the call started, Unix milliseconds.
    pub at_unix_ms: u64,
    /// The answer, in the same shape as a method answer.
    pub response: Value,
}

impl ScheduleResult {
    /// The telemetry message: the answer's fields plus `schedule` and
    /// `atUnixMs`.
    pub(crate) fn to_message(&self) -> Value {
        let mut msg = json!({ "schedule": self.name, "atUnixMs": self.at_unix_ms });
        if let (Some(m), Some(r)) = (msg.as_object_mut(), self.response.as_object()) {
            for (k, v) in r {
                m.insert(k.clone(), v.clone());
            }
        }
        msg
    }
}

/// Runs every schedule until `shutdown`; the handle ends when all have
/// stopped. Results are sent with back-pressure: a full channel delays that
/// schedule (its missed ticks are skipped) rather than dropping results.
pub(crate) fn spawn_schedules(
    relay: Arc<Relay>,
    schedules: &[ScheduleConfig],
    out: mpsc::Sender<ScheduleResult>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let schedules = schedules.to_vec();
    tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        for schedule in schedules {
            tasks.spawn(run_one(
                relay.clone(),
                schedule,
                out.clone(),
                shutdown.clone(),
            ));
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "a relay schedule stopped unexpectedly");
            }
        }
    })
}

async fn run_one(
    relay: Arc<Relay>,
    schedule: ScheduleConfig,
    out: mpsc::Sender<ScheduleResult>,
    shutdown: CancellationToken,
) {
    // A zero period would spin; config validation should prevent it.
    let every = schedule.every.max(std::time::Duration::from_millis(1));
    let mut ticks = interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        // Both branches are cancel-safe: a tick not taken is taken next time.
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = relay.clock().now();
        let at_unix_ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let call = relay.call_scheduled(
            &schedule.name,
            &schedule.method,
            &schedule.path,
            schedule.body.as_deref(),
        );
        let answer = tokio::select! {
            () = shutdown.cancelled() => return,
            a = call => a,
        };
        let response = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let result = ScheduleResult {
            name: schedule.name.clone(),
            at_unix_ms,
            response,
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            sent = out.send(result) => if sent.is_err() {
                tracing::warn!(schedule = %schedule.name, "schedule results are no longer read; stopping");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_carries_name_time_and_answer() {
        let r = ScheduleResult {
            name: "trend".into(),
            at_unix_ms: 5,
            response: json!({"status": 200, "headers": {}, "body": "x"}),
        };
        assert_eq!(
            r.to_message(),
            json!({"schedule": "trend", "atUnixMs": 5, "status": 200, "headers": {}, "body": "x"})
        );
    }
}
