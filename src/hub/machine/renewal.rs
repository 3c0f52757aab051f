//! When to renew a SAS token. Its expiry is wall-clock time (the hub checks
//! it against its own clock), but the device's wall clock can jump: NTP
//! correcting a stale RTC moves it by days, either way. Renewal is due at
//! whichever comes first: the wall clock reaching `renew_at` (looked at
//! every [`CHECK`]), or the token's remaining life before `renew_at`
//! passing on the monotonic clock. A forward jump so renews at the next
//! check, with a token minted for the new time; a backward jump neither
//! renews early nor postpones renewal by the length of the jump.

use std::time::{Duration, SystemTime};

/// How often the wall clock is compared with `renew_at`.
pub(crate) const CHECK: Duration = Duration::from_secs(1);

/// The renewal deadline of one token on both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RenewalDue {
    wall_at: SystemTime,
    /// On the monotonic clock the machine is given (since any origin).
    mono_at: Duration,
}

/// What the renewal timer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Reconnect with fresh credentials now.
    Renew,
    /// Look again after this long.
    Wait(Duration),
}

impl RenewalDue {
    /// The deadline for a token to be renewed at `renew_at`, scheduled
    /// when the clocks read `wall_now` and `mono_now`.
    pub(crate) fn new(renew_at: SystemTime, wall_now: SystemTime, mono_now: Duration) -> Self {
        let life = renew_at.duration_since(wall_now).unwrap_or_default();
        Self {
            wall_at: renew_at,
            mono_at: mono_now + life,
        }
    }

    /// Whether renewal is due when the clocks read `wall_now` and `mono_now`.
    pub(crate) fn step(&self, wall_now: SystemTime, mono_now: Duration) -> Step {
        if wall_now >= self.wall_at || mono_now >= self.mono_at {
            return Step::Renew;
        }
        Step::Wait(self.mono_at.saturating_sub(mono_now).min(CHECK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::hub::credentials::{key_source, CredentialSource};
    use tether_protocol::time::unix_seconds;
    use tether_testkit::ManualClock;

    const T0: u64 = 1_900_000_000;
    const DAY: Duration = Duration::from_secs(86_400);
    const TTL: Duration = Duration::from_secs(3600);

    /// Mints at the clock's time and schedules the renewal.
    fn mint(src: &CredentialSource, wall: &ManualClock, mono: Duration) -> (u64, RenewalDue) {
        let c = src.current(wall.now()).expect("a key mints tokens");
        let due = RenewalDue::new(c.renew_at.expect("renewable"), wall.now(), mono);
        (unix_seconds(c.expires_at.expect("expiry")), due)
    }

    #[test]
    fn before_renew_at_it_waits_at_most_one_check() {
        let wall = ManualClock::at_unix(T0);
        let mono = Duration::ZERO;
        let (se, due) = mint(&key_source(TTL), &wall, mono);
        assert_eq!(se, T0 + 3600);
        assert_eq!(due.step(wall.now(), mono), Step::Wait(CHECK));
        let nearly = mono + Duration::from_millis(2_880_000 - 300);
        wall.advance(Duration::from_millis(2_880_000 - 300));
        assert_eq!(
            due.step(wall.now(), nearly),
            Step::Wait(Duration::from_millis(300))
        );
        wall.advance(Duration::from_millis(300));
        let at = nearly + Duration::from_millis(300);
        assert_eq!(due.step(wall.now(), at), Step::Renew, "80 % of the TTL");
    }

    #[test]
    fn a_forward_jump_of_days_renews_at_once_for_the_new_time() {
        let src = key_source(TTL);
        let wall = ManualClock::at_unix(T0);
        let mono = Duration::ZERO;
        let (_, due) = mint(&src, &wall, mono);
        wall.advance(3 * DAY);
        let later = mono + CHECK;
        assert_eq!(due.step(wall.now(), later), Step::Renew);
        let (se, next) = mint(&src, &wall, later);
        assert_eq!(se, T0 + 3 * 86_400 + 3600, "expiry follows the new time");
        assert_eq!(
            next.step(wall.now(), later),
            Step::Wait(CHECK),
            "one renewal, not a loop"
        );
    }

    #[test]
    fn a_backward_jump_of_days_neither_loops_nor_postpones_renewal() {
        let src = key_source(TTL);
        let wall = ManualClock::at_unix(T0);
        let mono = Duration::ZERO;
        let (_, due) = mint(&src, &wall, mono);
        wall.set_unix(T0 - 3 * 86_400);
        let soon = mono + Duration::from_secs(60);
        assert_eq!(due.step(wall.now(), soon), Step::Wait(CHECK));
        // The token's life passes on the monotonic clock: renewal is due
        // although the wall clock is days short of renew_at.
        wall.advance(Duration::from_secs(2880));
        let at = mono + Duration::from_secs(2880);
        assert_eq!(due.step(wall.now(), at), Step::Renew);
        let (se, next) = mint(&src, &wall, at);
        assert_eq!(se, unix_seconds(wall.now()) + 3600);
        assert_eq!(next.step(wall.now(), at), Step::Wait(CHECK), "no loop");
        assert_eq!(
            next.step(wall.now(), at + Duration::from_secs(2879)),
            Step::Wait(CHECK)
        );
    }

    #[test]
    fn a_clock_jumping_to_1970_does_not_renew_early() {
        let wall = ManualClock::at_unix(T0);
        let mono = Duration::ZERO;
        let (_, due) = mint(&key_source(TTL), &wall, mono);
        wall.set_unix(10);
        assert_eq!(due.step(wall.now(), mono + CHECK), Step::Wait(CHECK));
    }
}
