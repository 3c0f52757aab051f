//! Retry delays, one type for every retry loop (hub reconnects, bridge
//! reopens, webhook resends): exponential growth with jitter, so that
//! thousands of devices that lost the same peer at once do not come back
//! in lockstep, and a floor, so that no failure turns into a busy loop.
//!
//! Pure: the caller passes the random source, so tests are deterministic.

use std::time::Duration;

use rand::Rng;

/// Delays uniform in `[floor, ceiling]`, where the ceiling starts at `base`
/// and doubles with each failure up to `cap`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    floor: Duration,
    attempt: u32,
}

/// Doublings past this change nothing for any sensible base (2^16 s is
/// 18 hours) and would overflow the shift.
const MAX_DOUBLINGS: u32 = 16;

impl Backoff {
    /// Starts at `base` and doubles up to `cap`; the floor is half of
    /// `base`, so even the first retry waits.
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            floor: base / 2,
            attempt: 0,
        }
    }

    /// The same with another floor: no delay is ever shorter (unless the
    /// cap is).
    #[must_use]
    pub(crate) fn with_floor(mut self, floor: Duration) -> Self {
        self.floor = floor;
        self
    }

    /// Forgets past failures (after a connection that stayed up, a device
    /// that opened, a delivery that went through).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The number of failures since the last reset.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        self.next_delay_at_least(Duration::ZERO, rng)
    }

    /// The delay before the next attempt, never below `floor` either: for
    /// failures that quick retries only make worse (refused credentials,
    /// throttling).
    pub(crate) fn next_delay_at_least(&mut self, floor: Duration, rng: &mut impl Rng) -> Duration {
        let exp = self.attempt.min(MAX_DOUBLINGS);
        self.attempt = self.attempt.saturating_add(1);
        let floor = floor.max(self.floor).min(self.cap);
        let ceiling = self.base.saturating_mul(1 << exp).min(self.cap).max(floor);
        let span = u64::try_from(ceiling.saturating_sub(floor).as_millis()).unwrap_or(u64::MAX);
        floor + Duration::from_millis(rng.gen_range(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(60);

    fn ceiling(attempt: u32) -> Duration {
        (BASE * (1 << attempt.min(6))).min(CAP)
    }

    #[test]
    fn delays_stay_between_the_floor_and_a_ceiling_that_doubles_to_the_cap() {
        let mut b = Backoff::new(BASE, CAP);
        let mut rng = StdRng::seed_from_u64(7);
        for n in 0..40 {
            let d = b.next_delay(&mut rng);
            assert!(d >= BASE / 2, "attempt {n}: {d:?}");
            assert!(d <= ceiling(n), "attempt {n}: {d:?}");
        }
        assert_eq!(b.attempts(), 40);
    }

    #[test]
    fn the_ceiling_grows_so_late_delays_reach_past_early_ones() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut b = Backoff::new(BASE, CAP);
        let late: Vec<_> = (0..20).map(|_| b.next_delay(&mut rng)).skip(8).collect();
        assert!(late.iter().any(|d| *d > ceiling(2)), "{late:?}");
    }

    #[test]
    fn a_floor_given_per_attempt_holds_even_while_the_ceiling_is_lower() {
        let slow = Duration::from_secs(10);
        let mut b = Backoff::new(BASE, CAP).with_floor(Duration::from_millis(250));
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..10 {
            assert!(b.next_delay_at_least(slow, &mut rng) >= slow);
        }
        let mut low = Backoff::new(BASE, CAP).with_floor(Duration::from_millis(250));
        let lows: Vec<_> = (0..50)
            .map(|_| {
                low.reset();
                low.next_delay(&mut rng)
            })
            .collect();
        assert!(lows.iter().all(|d| *d >= Duration::from_millis(250)));
        assert!(
            lows.iter().any(|d| *d < BASE / 2),
            "the lower floor is used"
        );
    }

    #[test]
    fn the_cap_bounds_even_a_higher_floor() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..10 {
            let d = b.next_delay_at_least(Duration::from_secs(10), &mut rng);
            assert_eq!(d, Duration::from_millis(50));
        }
    }

    #[test]
    fn jitter_spreads_devices_apart() {
        let mut rng = StdRng::seed_from_u64(3);
        let delays: std::collections::BTreeSet<_> = (0..20)
            .map(|_| {
                let mut b = Backoff::new(BASE, CAP);
                for _ in 0..5 {
                    b.next_delay(&mut rng);
                }
                b.next_delay(&mut rng)
            })
            .collect();
        assert!(delays.len() > 15, "{delays:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(BASE, CAP);
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..10 {
            b.next_delay(&mut rng);
        }
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay(&mut rng) <= BASE);
    }
}
