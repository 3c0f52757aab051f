//! What every walkthrough step shares: its wait, how it shows times and
//! bodies, and how it tells that delivery has settled.

use std::time::Duration;

use serde_json::Value;
use tether_outbox::Stats;
use tokio::time::Instant;

use super::admin::Admin;
use super::error::DemoError;
use super::observer::Observer;

/// Every wait in a step.
pub(super) const WAIT: Duration = Duration::from_secs(15);

/// Milliseconds, for the walkthrough's timings.
pub(super) fn ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A body on one line, cut to a readable length.
pub(super) fn one_line(text: &str) -> String {
    let flat: String = match serde_json::from_str::<Value>(text) {
        Ok(v) => v.to_string(),
        Err(_) => text.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    if flat.chars().count() > 110 {
        format!("{}…", flat.chars().take(110).collect::<String>())
    } else {
        flat
    }
}

/// What tether's counters say, for an error message.
pub(super) async fn diagnosis(admin: &Admin, observer: &Observer) -> String {
    let outbox = match admin.outbox_stats().await {
        Ok(s) => format!(
            "outbox accepted {}, {} waiting for the hub",
            s.accepted,
            s.sinks.iter().map(|k| k.depth).sum::<u64>()
        ),
        Err(e) => e.to_string(),
    };
    let bridge = match admin.health().await {
        Ok(doc) => format!("bridge {}", doc["components"]["bridge"]["details"]),
        Err(e) => e.to_string(),
    };
    format!(
        "{outbox}; {bridge}; the cloud received {}",
        observer.delivered()
    )
}

/// Waits (at most a step's wait) until everything tether accepted has
/// been delivered: its hub queue is empty and the cloud saw as many
/// distinct messages. Returns the last counters either way; the summary
/// shows any loss.
pub(super) async fn settled(admin: &Admin, observer: &Observer) -> Result<Stats, DemoError> {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = admin.outbox_stats().await?;
        let depth: u64 = stats.sinks.iter().map(|s| s.depth).sum();
        let delivered = observer.delivered() as u64;
        if (depth == 0 && delivered >= stats.accepted) || Instant::now() > deadline {
            return Ok(stats);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
