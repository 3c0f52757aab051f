//! Relay counters and the latency histogram, as plain atomics: cheap to
//! update on every call, rendered in the Prometheus text format by the
//! admin API's `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds. They span a fast
/// local GET to the 25 s request timeout.
pub(crate) const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0,
];

/// HTTP status codes are below 600; the array is indexed by status.
const STATUSES: usize = 600;

/// Counters for the relay.
#[derive(Debug)]
pub(crate) struct RelayMetrics {
    requests: [AtomicU64; STATUSES],
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_micros: AtomicU64,
    busy: AtomicU64,
    deduplicated: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    uploads: AtomicU64,
    upload_failures: AtomicU64,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self {
            requests: [const { AtomicU64::new(0) }; STATUSES],
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len()],
            duration_count: AtomicU64::new(0),
            duration_micros: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
            upload_failures: AtomicU64::new(0),
        }
    }
}

impl RelayMetrics {
    /// Records one answered call.
    pub(crate) fn record(&self, status: u16, took: Duration, sent: u64, received: u64) {
        if let Some(c) = self.requests.get(usize::from(status)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        // Cumulative buckets are computed at render time; store per bucket.
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        self.bytes_received.fetch_add(received, Ordering::Relaxed);
    }

    /// A call refused because every slot and queue place was taken.
    pub(crate) fn busy(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// A repeated `$rid` answered from the cache.
    pub(crate) fn deduplicated(&self) {
        self.deduplicated.fetch_add(1, Ordering::Relaxed);
    }

    /// A response upload, and whether it worked.
    pub(crate) fn upload(&self, ok: bool) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.upload_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls answered with `status` so far (tests read the counters here;
    /// the daemon only renders them).
    #[cfg(test)]
    pub(crate) fn requests_with_status(&self, status: u16) -> u64 {
        self.requests
            .get(usize::from(status))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Busy refusals so far.
    #[cfg(test)]
    pub(crate) fn busy_total(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Calls answered from the de-duplication cache so far.
    #[cfg(test)]
    pub(crate) fn deduplicated_total(&self) -> u64 {
        self.deduplicated.load(Ordering::Relaxed)
    }

    /// Appends every metric in the Prometheus text exposition format.
    pub(crate) fn render_prometheus(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // Writing to a String cannot fail; results are ignored on purpose.
        let _ = writeln!(
            out,
            "# HELP tether_relay_requests_total Relayed calls by answered status."
        );
        let _ = writeln!(out, "# TYPE tether_relay_requests_total counter");
        for (status, c) in self.requests.iter().enumerate() {
            let n = load(c);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "tether_relay_requests_total{{status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tether_relay_request_duration_seconds Time to answer a relayed call."
        );
        let _ = writeln!(
            out,
            "# TYPE tether_relay_request_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, c) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += load(c);
            let _ = writeln!(
                out,
                "tether_relay_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&self.duration_count);
        let _ = writeln!(
            out,
            "tether_relay_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = load(&self.duration_micros) as f64 / 1e6;
        let _ = writeln!(out, "tether_relay_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "tether_relay_request_duration_seconds_count {count}");
        for (name, help, value) in [
            (
                "tether_relay_busy_total",
                "Calls refused with 503 because the relay was full.",
                &self.busy,
            ),
            (
                "tether_relay_deduplicated_total",
                "Repeated $rid answered from the cache.",
                &self.deduplicated,
            ),
            (
                "tether_relay_request_bytes_total",
                "Body bytes sent to the controller.",
                &self.bytes_sent,
            ),
            (
                "tether_relay_response_bytes_total",
                "Body bytes received from the controller.",
                &self.bytes_received,
            ),
            (
                "tether_relay_uploads_total",
                "Responses sent through file upload.",
                &self.uploads,
            ),
            (
                "tether_relay_upload_failures_total",
                "File uploads that failed.",
                &self.upload_failures,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", load(value));
        }
    }
}

impl crate::admin::RenderMetrics for super::Relay {
    fn render(&self, out: &mut String) {
        self.metrics().render_prometheus(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_names_statuses_buckets_and_counters() {
        let m = RelayMetrics::default();
        m.record(200, Duration::from_millis(30), 10, 20);
        m.record(200, Duration::from_secs(30), 0, 0);
        m.record(503, Duration::from_millis(1), 0, 0);
        m.busy();
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(
            out.contains("tether_relay_requests_total{status=\"200\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("tether_relay_requests_total{status=\"503\"} 1\n"),
            "{out}"
        );
        assert!(!out.contains("status=\"404\""), "{out}");
        assert!(
            out.contains("tether_relay_request_duration_seconds_bucket{le=\"0.005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("tether_relay_request_duration_seconds_bucket{le=\"0.05\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("tether_relay_request_duration_seconds_bucket{le=\"25\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("tether_relay_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("tether_relay_request_duration_seconds_count 3\n"),
            "{out}"
        );
        assert!(out.contains("tether_relay_busy_total 1\n"), "{out}");
        assert!(
            out.contains("tether_relay_request_bytes_total 10\n"),
            "{out}"
        );
        assert!(
            out.contains("tether_relay_response_bytes_total 20\n"),
            "{out}"
        );
        assert_eq!(m.requests_with_status(200), 2);
    }
}
