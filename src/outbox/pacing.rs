//! Upstream pacing: a token bucket holding up to one second of messages,
//! so a backlog drains at the configured rate without bursts beyond it.

use std::time::Duration;

use tokio::time::Instant;

/// Limits publishes to `rate` per second; unlimited when `None`.
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: Option<f64>,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// A pacer for `per_second` messages (`None` = unlimited).
    pub(crate) fn new(per_second: Option<u32>) -> Self {
        let rate = per_second.filter(|r| *r > 0).map(f64::from);
        Self {
            rate,
            tokens: rate.unwrap_or(0.0),
            last: Instant::now(),
        }
    }

    /// Waits until one more message may go.
    pub(crate) async fn acquire(&mut self) {
        let Some(rate) = self.rate else { return };
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(rate);
        self.last = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.last = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_backlog_drains_at_the_configured_rate() {
        let mut p = Pacer::new(Some(10));
        let start = Instant::now();
        for _ in 0..30 {
            p.acquire().await;
        }
        // 10 from the full bucket, then 20 at 10/s.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1900) && took <= Duration::from_millis(2100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_rate_means_no_waiting() {
        let mut p = Pacer::new(None);
        let start = Instant::now();
        for _ in 0..1000 {
            p.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
