//! The bridge's state for operators: link up or down (logged once per
//! change), counters for `/metrics`, and the `/healthz` contribution.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde_json::{json, Value};
use tracing::{info, warn};

use crate::admin::metrics::family;
use crate::admin::{HealthCheck, RenderMetrics};

/// Counters and link state, shared by the bridge task and the admin API.
#[derive(Debug, Default)]
pub(crate) struct BridgeStats {
    device: String,
    link_up: AtomicBool,
    device_open: AtomicBool,
    /// Why the link is down, while it is.
    down_reason: Mutex<Option<String>>,
    updates: AtomicU64,
    link_ups: AtomicU64,
    link_losses: AtomicU64,
    checksum_errors: AtomicU64,
    protocol_errors: AtomicU64,
    stray_bytes: AtomicU64,
    reset_pulses: AtomicU64,
    upstream_failures: AtomicU64,
    upstream_dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl BridgeStats {
    /// Stats for the device at `device` (shown in health details).
    pub(crate) fn new(device: String) -> Self {
        Self {
            device,
            down_reason: Mutex::new(Some("starting".into())),
            ..Self::default()
        }
    }

    /// Whether the boot sequence finished and the MCU is reachable.
    pub(crate) fn link_up(&self) -> bool {
        self.link_up.load(Ordering::Relaxed)
    }

    /// Link-up transitions so far (first boot included).
    #[cfg(test)]
    pub(crate) fn link_ups(&self) -> u64 {
        self.link_ups.load(Ordering::Relaxed)
    }

    /// Link losses so far.
    pub(crate) fn link_losses(&self) -> u64 {
        self.link_losses.load(Ordering::Relaxed)
    }

    /// Values the MCU reported so far.
    pub(crate) fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    /// Corrupt sync frames received so far.
    #[cfg(test)]
    pub(crate) fn checksum_errors(&self) -> u64 {
        self.checksum_errors.load(Ordering::Relaxed)
    }

    /// Protocol errors so far (corrupt or truncated frames, broken
    /// handshakes, checksum errors included).
    pub(crate) fn protocol_errors(&self) -> u64 {
        self.protocol_errors.load(Ordering::Relaxed)
    }

    /// Bytes of line noise thrown away outside any frame so far.
    pub(crate) fn stray_bytes(&self) -> u64 {
        self.stray_bytes.load(Ordering::Relaxed)
    }

    /// Reset pulses sent to the MCU so far.
    #[cfg(test)]
    pub(crate) fn reset_pulses(&self) -> u64 {
        self.reset_pulses.load(Ordering::Relaxed)
    }

    pub(crate) fn set_up(&self) {
        if !self.link_up.swap(true, Ordering::Relaxed) {
            bump(&self.link_ups);
            *self.reason() = None;
            info!(device = %self.device, "MCU link up");
        }
    }

    /// Marks the link down; logs and counts only the change from up, so a
    /// device that stays away does not flood the log.
    pub(crate) fn set_down(&self, why: &str) {
        let was_up = self.link_up.swap(false, Ordering::Relaxed);
        let mut reason = self.reason();
        if was_up {
            bump(&self.link_losses);
            warn!(device = %self.device, reason = why, "MCU link lost; recovering");
        }
        *reason = Some(why.to_string());
    }

    pub(crate) fn set_device_open(&self, open: bool) {
        self.device_open.store(open, Ordering::Relaxed);
    }

    pub(crate) fn count_update(&self) {
        bump(&self.updates);
    }

    pub(crate) fn count_checksum_error(&self) {
        bump(&self.checksum_errors);
    }

    pub(crate) fn count_protocol_error(&self) {
        bump(&self.protocol_errors);
    }

    /// The module's own running count (it outlives sessions).
    pub(crate) fn set_stray_bytes(&self, n: u64) {
        self.stray_bytes.store(n, Ordering::Relaxed);
    }

    pub(crate) fn count_reset_pulse(&self) {
        bump(&self.reset_pulses);
    }

    pub(crate) fn count_upstream_failure(&self) {
        bump(&self.upstream_failures);
    }

    pub(crate) fn count_upstream_dropped(&self) {
        bump(&self.upstream_dropped);
    }

    fn reason(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.down_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl HealthCheck for BridgeStats {
    fn check(&self) -> (&'static str, bool, Value) {
        let up = self.link_up();
        let details = json!({
            "device": self.device,
            "linkUp": up,
            "deviceOpen": self.device_open.load(Ordering::Relaxed),
            "downReason": self.reason().clone(),
            "linkLosses": self.link_losses(),
            "protocolErrors": self.protocol_errors(),
            "strayBytes": self.stray_bytes(),
            "updates": self.updates(),
        });
        ("bridge", up, details)
    }
}

impl RenderMetrics for BridgeStats {
    fn render(&self, out: &mut String) {
        let gauge = |b: bool| if b { 1.0 } else { 0.0 };
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        family(
            out,
            "tether_bridge_link_up",
            "gauge",
            "1 while the afLib4 link to the MCU is up.",
            gauge(self.link_up()),
        );
        family(
            out,
            "tether_bridge_device_open",
            "gauge",
            "1 while the serial device is open.",
            gauge(self.device_open.load(Ordering::Relaxed)),
        );
        let counters = [
            (
                "tether_bridge_updates_total",
                "Attribute values reported by the MCU.",
                &self.updates,
            ),
            (
                "tether_bridge_link_ups_total",
                "Completed boot sequences.",
                &self.link_ups,
            ),
            (
                "tether_bridge_link_losses_total",
                "Times the MCU link was lost.",
                &self.link_losses,
            ),
            (
                "tether_bridge_checksum_errors_total",
                "Corrupt sync frames from the MCU.",
                &self.checksum_errors,
            ),
            (
                "tether_bridge_protocol_errors_total",
                "Protocol errors from the MCU (checksums included).",
                &self.protocol_errors,
            ),
            (
                "tether_bridge_stray_bytes_total",
                "Bytes of line noise from the MCU thrown away outside any frame.",
                &self.stray_bytes,
            ),
            (
                "tether_bridge_reset_pulses_total",
                "Reset pulses sent to the MCU.",
                &self.reset_pulses,
            ),
            (
                "tether_bridge_upstream_failures_total",
                "Attribute messages the upstream refused.",
                &self.upstream_failures,
            ),
            (
                "tether_bridge_upstream_dropped_total",
                "Attribute messages dropped because the upstream queue was full.",
                &self.upstream_dropped,
            ),
        ];
        for (name, help, c) in counters {
            family(out, name, "counter", help, count(c));
        }
    }
}
