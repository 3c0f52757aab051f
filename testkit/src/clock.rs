//! A wall clock that moves only when told to, for what the daemon and its
//! components take as their clock (`tether_outbox::clock::Clock`, which
//! `tether::clock` re-exports): token expiry, renewals, TTLs and
//! timestamps at fixed times, and jumps of the wall clock.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether_outbox::clock::Clock;

/// A clock that only moves when told to; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// A clock reading `unix_seconds`.
    pub fn at_unix(unix_seconds: u64) -> Self {
        Self(Arc::new(Mutex::new(unix(unix_seconds))))
    }

    /// Sets the time (also backwards).
    pub fn set_unix(&self, unix_seconds: u64) {
        *self.time() = unix(unix_seconds);
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        *self.time() += by;
    }

    fn time(&self) -> MutexGuard<'_, SystemTime> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.time()
    }
}

fn unix(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_moves_only_when_told() {
        let c = ManualClock::at_unix(1_000);
        let shared = c.clone();
        c.advance(Duration::from_secs(5));
        assert_eq!(shared.now(), unix(1_005));
        c.set_unix(7);
        assert_eq!(shared.now(), unix(7));
    }
}
