//! Wall-clock time, injected wherever TTLs, token expiry or certificate
//! checks are decided, so tests can fix or move it. It lives in the
//! outbox crate, whose ages and TTLs are its first users; the daemon
//! re-exports it as `tether::clock` for its own (SAS tokens, TLS).

use std::sync::Arc;
use std::time::SystemTime;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A shareable clock handle.
pub type SharedClock = Arc<dyn Clock>;

pub(crate) use tether_protocol::time::unix_seconds;

/// The build time less a day: any earlier reading means the clock has not
/// been set yet (no RTC, NTP not synced).
pub(crate) fn build_floor_unix() -> u64 {
    env!("TETHER_BUILD_UNIX").parse().unwrap_or(0)
}

/// Whether `now` can be trusted for TLS and SAS tokens (the hub session
/// waits for it before connecting).
pub fn is_plausible(now: SystemTime) -> bool {
    unix_seconds(now) >= build_floor_unix()
}

#[cfg(test)]
pub(crate) use self::manual::ManualClock;

#[cfg(test)]
mod manual {
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::Clock;

    /// A clock that only moves when told to, for this crate's unit tests
    /// (the daemon's tests have `tether_testkit::ManualClock`: the kit
    /// links the normal build of this crate, not the one under test).
    #[derive(Debug, Clone)]
    pub(crate) struct ManualClock(Arc<Mutex<SystemTime>>);

    impl ManualClock {
        /// A clock reading `unix_seconds`.
        pub(crate) fn at_unix(unix_seconds: u64) -> Self {
            Self(Arc::new(Mutex::new(
                UNIX_EPOCH + Duration::from_secs(unix_seconds),
            )))
        }

        /// Sets the time.
        pub(crate) fn set_unix(&self, unix_seconds: u64) {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
                UNIX_EPOCH + Duration::from_secs(unix_seconds);
        }

        /// Moves the time forward (or back, with a negative jump via `set_unix`).
        pub(crate) fn advance(&self, by: Duration) {
            let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            *t += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn a_1970_clock_is_not_plausible_and_today_is() {
        assert!(!is_plausible(UNIX_EPOCH + Duration::from_secs(10)));
        assert!(is_plausible(SystemTime::now()));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at_unix(1_000);
        c.advance(Duration::from_secs(5));
        assert_eq!(unix_seconds(c.now()), 1_005);
        c.set_unix(7);
        assert_eq!(unix_seconds(c.now()), 7);
    }
}
