//! Prometheus text exposition. Components keep their own counters and
//! render them; the admin API concatenates.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::hub::refusal::Reason;
use crate::hub::{ConnState, HubStatus};

/// Something that can append Prometheus text.
pub(crate) trait RenderMetrics: Send + Sync {
    /// Appends metric families to `out`.
    fn render(&self, out: &mut String);
}

/// Appends one sample with its HELP and TYPE lines.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Metrics derived from the hub session's status.
pub(crate) struct HubMetrics {
    status: tokio::sync::watch::Receiver<HubStatus>,
    client_cert_not_after: Option<u64>,
}

impl HubMetrics {
    /// Metrics for a session; `client_cert_not_after` is the expiry of the
    /// device's TLS client certificate, when it has one.
    pub(crate) fn new(
        status: tokio::sync::watch::Receiver<HubStatus>,
        client_cert_not_after: Option<u64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            status,
            client_cert_not_after,
        })
    }
}

impl RenderMetrics for HubMetrics {
    fn render(&self, out: &mut String) {
        let s = self.status.borrow().clone();
        let connected = if s.state == ConnState::Connected {
            1.0
        } else {
            0.0
        };
        family(
            out,
            "tether_hub_connected",
            "gauge",
            "1 while the hub session is connected.",
            connected,
        );
        family(
            out,
            "tether_hub_connects_total",
            "counter",
            "Successful hub connections.",
            s.connects as f64,
        );
        family(
            out,
            "tether_hub_disconnects_total",
            "counter",
            "Hub connections lost or refused.",
            s.disconnects as f64,
        );
        let _ = writeln!(
            out,
            "# HELP tether_hub_inbound_refused_total Inbound messages refused (acknowledged, \
             answered where possible, not handled), by reason."
        );
        let _ = writeln!(out, "# TYPE tether_hub_inbound_refused_total counter");
        for reason in Reason::ALL {
            let _ = writeln!(
                out,
                "tether_hub_inbound_refused_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                s.inbound_refused.get(reason)
            );
        }
        if let Some(t) = s.credential_expires_at {
            family(
                out,
                "tether_hub_token_expiry_timestamp_seconds",
                "gauge",
                "Expiry of the SAS token in use (Unix seconds).",
                t as f64,
            );
        }
        family(
            out,
            "tether_hub_token_expired",
            "gauge",
            "1 when a pre-made SAS token expired and cannot be renewed.",
            if s.credential_expired { 1.0 } else { 0.0 },
        );
        if let Some(t) = self.client_cert_not_after {
            family(
                out,
                "tether_hub_certificate_expiry_timestamp_seconds",
                "gauge",
                "notAfter of the device's TLS client certificate (Unix seconds).",
                t as f64,
            );
        }
    }
}

/// Build information.
pub(crate) struct BuildInfo;

impl RenderMetrics for BuildInfo {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP tether_build_info tether version.");
        let _ = writeln!(out, "# TYPE tether_build_info gauge");
        let _ = writeln!(
            out,
            "tether_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
    }
}
