//! Reconnect delays: exponential backoff with full jitter, so thousands of
//! devices that lost the hub at once do not return in lockstep.

use std::time::Duration;

use rand::Rng;

/// Why the last attempt failed; auth, TLS and throttling get a longer floor
/// because retrying them quickly only adds load (and throttling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Network unreachable, refused, reset, timed out.
    Network,
    /// The hub refused the credentials.
    Auth,
    /// TLS handshake or certificate failure.
    Tls,
    /// The hub said "server unavailable" / throttled us.
    Throttled,
}

/// Backoff state for one session.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

/// Lowest delay for network failures: never a busy loop.
const NETWORK_FLOOR: Duration = Duration::from_millis(250);
/// Lowest delay after auth, TLS or throttling failures.
const SLOW_FLOOR: Duration = Duration::from_secs(10);

impl Backoff {
    /// Starts at `base` and doubles up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The hub default: 1 s doubling to 60 s.
    pub fn hub_default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Forgets past failures (after a connection that stayed up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The number of failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt: uniform in `[floor, ceiling]`
    /// where the ceiling doubles with each failure up to the cap.
    pub fn next_delay(&mut self, failure: Failure, rng: &mut impl Rng) -> Duration {
        let exp = self.attempt.min(16);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.base.saturating_mul(1 << exp).min(self.cap);
        let floor = match failure {
            Failure::Network => NETWORK_FLOOR,
            Failure::Auth | Failure::Tls | Failure::Throttled => SLOW_FLOOR,
        }
        .min(self.cap);
        let ceiling = ceiling.max(floor);
        let span = ceiling.saturating_sub(floor).as_millis() as u64;
        floor + Duration::from_millis(rng.gen_range(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_bounds() {
        let mut b = Backoff::hub_default();
        let mut rng = StdRng::seed_from_u64(7);
        for n in 0..30 {
            let d = b.next_delay(Failure::Network, &mut rng);
            let ceiling = Duration::from_secs(1u64 << n.min(6)).min(Duration::from_secs(60));
            assert!(d >= NETWORK_FLOOR, "attempt {n}: {d:?}");
            assert!(d <= ceiling.max(NETWORK_FLOOR), "attempt {n}: {d:?}");
        }
    }

    #[test]
    fn auth_failures_wait_at_least_the_slow_floor() {
        let mut b = Backoff::hub_default();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..10 {
            assert!(b.next_delay(Failure::Auth, &mut rng) >= SLOW_FLOOR);
        }
    }

    #[test]
    fn jitter_spreads_devices_apart() {
        let mut rng = StdRng::seed_from_u64(3);
        let delays: std::collections::BTreeSet<_> = (0..20)
            .map(|_| {
                let mut b = Backoff::hub_default();
                for _ in 0..5 {
                    b.next_delay(Failure::Network, &mut rng);
                }
                b.next_delay(Failure::Network, &mut rng)
            })
            .collect();
        assert!(delays.len() > 15, "{delays:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::hub_default();
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..10 {
            b.next_delay(Failure::Network, &mut rng);
        }
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay(Failure::Network, &mut rng) <= Duration::from_secs(1));
    }
}
