//! Outbox metrics (Prometheus text) and its `/healthz` contribution.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;

use crate::admin::metrics::family;
use crate::admin::{HealthCheck, RenderMetrics};

use super::core::Core;

/// Process-wide counters, updated without the core lock.
#[derive(Debug, Default)]
pub struct Counters {
    accepted: AtomicU64,
    rejected_full: AtomicU64,
    rejected_disk: AtomicU64,
    flushes: AtomicU64,
    flush_micros: AtomicU64,
    flush_max_micros: AtomicU64,
    write_failing: AtomicBool,
    store_lost: AtomicU64,
    store_loss: Mutex<Option<String>>,
    /// Salvage of set-aside or imported stores.
    pub salvage: super::salvage::Status,
}

impl Counters {
    /// Counts durably accepted messages.
    pub fn accepted(&self, n: u64) {
        self.accepted.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages accepted since start.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// A request refused by `reject-new`.
    pub fn rejected_full(&self) {
        self.rejected_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one group commit (flush + fdatasync) and whether it worked.
    pub fn flushed(&self, took: Duration, ok: bool, disk_full: bool) {
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_micros.fetch_add(us, Ordering::Relaxed);
        self.flush_max_micros.fetch_max(us, Ordering::Relaxed);
        self.write_failing.store(!ok, Ordering::Relaxed);
        if disk_full {
            self.rejected_disk.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records that messages were lost with the store (set aside, replaced
    /// or truncated between runs), saying what happened.
    pub fn store_lost(&self, what: String) {
        self.store_lost.fetch_add(1, Ordering::Relaxed);
        *self
            .store_loss
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(what);
    }

    /// What the last store loss was, if any since start.
    pub fn store_loss(&self) -> Option<String> {
        self.store_loss
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the last write failed.
    pub fn write_failing(&self) -> bool {
        self.write_failing.load(Ordering::Relaxed)
    }
}

/// Per-sink counters, kept under the core lock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkCounters {
    /// Delivered (PUBACK or 2xx).
    pub delivered: u64,
    /// Sent again.
    pub duplicates: u64,
    /// Expired into failures.
    pub expired: u64,
    /// Dropped by drop-oldest.
    pub dropped: u64,
    /// Failures recorded.
    pub failures: u64,
}

/// `/metrics` and `/healthz` for the outbox.
pub struct OutboxMetrics(pub Arc<Core>);

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
        let c = &self.0.counters;
        let per = |f: &dyn Fn(&super::SinkStats) -> f64| -> Vec<(String, f64)> {
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
                    c.rejected_full.load(Ordering::Relaxed) as f64,
                ),
                (
                    "reason=\"disk_full\"".into(),
                    c.rejected_disk.load(Ordering::Relaxed) as f64,
                ),
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
            c.store_lost.load(Ordering::Relaxed) as f64,
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
        let flushes = c.flushes.load(Ordering::Relaxed);
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
            c.flush_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        family(
            out,
            "tether_outbox_flush_seconds_max",
            "gauge",
            "Longest group commit since start.",
            c.flush_max_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
    }
}

impl HealthCheck for OutboxMetrics {
    fn check(&self) -> (&'static str, bool, serde_json::Value) {
        let s = self.0.stats();
        let writable = !self.0.counters.write_failing();
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
                "storeLoss": self.0.counters.store_loss(),
                "salvage": self.0.counters.salvage.view(),
            }),
        )
    }
}
