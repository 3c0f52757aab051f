//! Outbox metrics (Prometheus text) and its `/healthz` contribution.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::json;
use tether_outbox::{Core, SinkStats};

use crate::admin::metrics::family;
use crate::admin::{HealthCheck, RenderMetrics};

/// `/metrics` and `/healthz` for the outbox.
pub(crate) struct OutboxMetrics(pub(crate) Arc<Core>);

fn labelled(out: &mut String, name: &str, kind: &str, help: &str, rows: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in rows {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

impl RenderMetrics for OutboxMetrics {
    fn render(&self, out: &mut String) {
        let s = self.0.stats();
        let c = self.0.counters();
        let t = c.totals();
        let per = |f: &dyn Fn(&SinkStats) -> f64| -> Vec<(String, f64)> {
            s.sinks
                .iter()
                .map(|k| (format!("sink=\"{}\"", k.name), f(k)))
                .collect()
        };
        labelled(
            out,
            "tether_outbox_queue_depth",
            "gauge",
            "Messages waiting per sink.",
            &per(&|k| k.depth as f64),
        );
        labelled(
            out,
            "tether_outbox_queue_bytes",
            "gauge",
            "Bytes waiting per sink.",
            &per(&|k| k.bytes as f64),
        );
        labelled(
            out,
            "tether_outbox_oldest_age_seconds",
            "gauge",
            "Age of the oldest undelivered message per sink.",
            &per(&|k| k.oldest_age_seconds.unwrap_or(0.0)),
        );
        labelled(
            out,
            "tether_outbox_delivered_total",
            "counter",
            "Messages delivered per sink.",
            &per(&|k| k.delivered as f64),
        );
        labelled(
            out,
            "tether_outbox_duplicates_resent_total",
            "counter",
            "Messages sent again after a lost connection or missing acknowledgement.",
            &per(&|k| k.duplicates as f64),
        );
        labelled(
            out,
            "tether_outbox_expired_total",
            "counter",
            "Messages expired into push failures per sink.",
            &per(&|k| k.expired as f64),
        );
        labelled(
            out,
            "tether_outbox_failures_total",
            "counter",
            "Push failures recorded per sink.",
            &per(&|k| k.failures as f64),
        );
        let dropped: u64 = s.sinks.iter().map(|k| k.dropped).sum();
        labelled(
            out,
            "tether_outbox_dropped_total",
            "counter",
            "Messages dropped or refused, by reason.",
            &[
                ("reason=\"store_full_drop_oldest\"".into(), dropped as f64),
                (
                    "reason=\"store_full_reject_new\"".into(),
                    t.rejected_full as f64,
                ),
                ("reason=\"disk_full\"".into(), t.rejected_disk as f64),
            ],
        );
        family(
            out,
            "tether_outbox_accepted_total",
            "counter",
            "Messages durably accepted.",
            s.accepted as f64,
        );
        family(
            out,
            "tether_outbox_store_lost_total",
            "counter",
            "Stores found damaged, replaced or truncated at start (their messages are gone).",
            t.store_lost as f64,
        );
        let (messages, failures) = c.salvage.salvaged();
        labelled(
            out,
            "tether_outbox_salvaged_total",
            "counter",
            "Records imported from set-aside or copied stores, by kind.",
            &[
                ("kind=\"message\"".into(), messages as f64),
                ("kind=\"failure\"".into(), failures as f64),
            ],
        );
        family(
            out,
            "tether_outbox_unreadable_total",
            "counter",
            "Records of set-aside or copied stores that could not be read (lost).",
            c.salvage.unreadable() as f64,
        );
        family(
            out,
            "tether_outbox_messages",
            "gauge",
            "Messages stored.",
            s.messages as f64,
        );
        family(
            out,
            "tether_outbox_failures_stored",
            "gauge",
            "Push failures kept.",
            s.failures as f64,
        );
        family(
            out,
            "tether_outbox_store_disk_bytes",
            "gauge",
            "Size of the store on disk.",
            s.disk_bytes as f64,
        );
        family(
            out,
            "tether_outbox_store_max_bytes",
            "gauge",
            "store.max_bytes.",
            s.max_bytes as f64,
        );
        let flushes = t.flushes;
        family(
            out,
            "tether_outbox_flush_seconds_count",
            "counter",
            "Group commits (flush + fdatasync).",
            flushes as f64,
        );
        family(
            out,
            "tether_outbox_flush_seconds_sum",
            "counter",
            "Time spent in group commits.",
            t.flush_micros as f64 / 1e6,
        );
        family(
            out,
            "tether_outbox_flush_seconds_max",
            "gauge",
            "Longest group commit since start.",
            t.flush_max_micros as f64 / 1e6,
        );
    }
}

impl HealthCheck for OutboxMetrics {
    fn check(&self) -> (&'static str, bool, serde_json::Value) {
        let s = self.0.stats();
        let writable = !self.0.counters().write_failing();
        let oldest = s
            .sinks
            .iter()
            .filter_map(|k| k.oldest_age_seconds)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        (
            "outbox",
            writable,
            json!({
                "storeWritable": writable,
                "oldestUndeliveredAgeSeconds": oldest,
                "messages": s.messages,
                "diskBytes": s.disk_bytes,
                "failures": s.failures,
                "storeLoss": self.0.store_loss(),
                "salvage": self.0.counters().salvage.view(),
            }),
        )
    }
}
