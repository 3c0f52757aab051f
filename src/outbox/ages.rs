//! The outbox's age clock. Message ages decide expiry, so they must not
//! follow a wall clock that jumps (devices without an RTC boot in 1970 or
//! at a stale saved time, then NTP moves the clock by months).
//!
//! Design: ages are measured on a *store clock*, in milliseconds, that
//! - advances with the monotonic clock while tether runs (wall-clock jumps
//!   during a run move no age at all);
//! - is persisted with every commit as a checkpoint `(store ms, wall ms)`,
//!   the wall part only when the wall clock is plausible (after the build
//!   date);
//! - across a restart, adds the downtime measured by the wall clock
//!   (`wall now - checkpoint wall`), clamped to `0..=cap` (cap = the TTL):
//!   a wall clock running backwards adds nothing, one jumping forward can
//!   age messages by at most one TTL;
//! - when the wall clock is not plausible at start (no RTC yet), the
//!   downtime is added later, once NTP sets the clock, less the time run
//!   since start. A stale-but-plausible clock (a fake-hwclock file) at start
//!   counts its downtime short: messages may then live longer than the TTL
//!   by that downtime, never shorter.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::clock::{is_plausible, SharedClock};

use super::message::unix_ms;

/// A persisted checkpoint: store-clock ms and the wall clock then (ms, or
/// 0 when it was not plausible).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Store clock.
    pub store_ms: u64,
    /// Wall clock, 0 when unknown.
    pub wall_ms: u64,
}

impl Checkpoint {
    /// 16 bytes, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.store_ms.to_be_bytes().to_vec();
        v.extend_from_slice(&self.wall_ms.to_be_bytes());
        v
    }

    /// Reads [`Checkpoint::encode`]; `None` when malformed.
    pub fn decode(b: &[u8]) -> Option<Self> {
        Some(Self {
            store_ms: u64::from_be_bytes(b.get(0..8)?.try_into().ok()?),
            wall_ms: u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
        })
    }
}

/// The store clock of one run.
pub struct AgeClock {
    wall: SharedClock,
    started: Instant,
    base_ms: u64,
    /// The checkpoint to measure downtime from, while the wall clock has
    /// not yet been plausible in this run.
    pending: Option<Checkpoint>,
    cap_ms: u64,
    /// Last value handed out: the store clock never goes backwards.
    last_ms: u64,
    /// Latest plausible pairing, for the next checkpoint.
    wall_pair: Checkpoint,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl AgeClock {
    /// Resumes from `persisted` (none for a new store); `cap` bounds how
    /// much a restart can age messages.
    pub fn resume(wall: SharedClock, persisted: Option<Checkpoint>, cap: Duration) -> Self {
        let ck = persisted.unwrap_or_default();
        let mut clock = Self {
            wall,
            started: Instant::now(),
            base_ms: ck.store_ms,
            pending: (ck.wall_ms != 0).then_some(ck),
            cap_ms: ms(cap),
            last_ms: ck.store_ms,
            wall_pair: ck,
        };
        clock.now_ms();
        clock
    }

    /// The store clock now, in ms. Also resolves a pending downtime once
    /// the wall clock is plausible.
    pub fn now_ms(&mut self) -> u64 {
        let run_ms = ms(self.started.elapsed());
        let wall = self.wall.now();
        if is_plausible(wall) {
            let wall_ms = unix_ms(wall);
            if let Some(ck) = self.pending.take() {
                let down = wall_ms.saturating_sub(ck.wall_ms).saturating_sub(run_ms);
                let down = down.min(self.cap_ms);
                if down > 0 {
                    tracing::info!(
                        downtime_ms = down,
                        "outbox ages include the downtime since the last run"
                    );
                }
                self.base_ms = self.base_ms.saturating_add(down);
            }
            let now = self.base_ms.saturating_add(run_ms).max(self.last_ms);
            self.wall_pair = Checkpoint {
                store_ms: now,
                wall_ms,
            };
        }
        let now = self.base_ms.saturating_add(run_ms).max(self.last_ms);
        self.last_ms = now;
        now
    }

    /// What to persist now.
    pub fn checkpoint(&mut self) -> Checkpoint {
        let now = self.now_ms();
        if self.pending.is_some() {
            // Keep the old wall pairing until the downtime is known, with
            // the store clock moved on by the time run so far.
            let ck = self.pending.unwrap_or_default();
            return Checkpoint {
                store_ms: now,
                wall_ms: ck.wall_ms.saturating_add(now.saturating_sub(ck.store_ms)),
            };
        }
        Checkpoint {
            store_ms: now,
            wall_ms: if self.wall_pair.wall_ms == 0 {
                0
            } else {
                self.wall_pair
                    .wall_ms
                    .saturating_add(now.saturating_sub(self.wall_pair.store_ms))
            },
        }
    }

    /// The wall clock (for `createdTimestamp` and error texts).
    pub fn wall_now(&self) -> SystemTime {
        self.wall.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    const DAY: u64 = 86_400;
    const NOW: u64 = 1_900_000_000;

    #[tokio::test(start_paused = true)]
    async fn wall_jumps_during_a_run_move_no_age() {
        let wall = ManualClock::at_unix(NOW);
        let mut c = AgeClock::resume(Arc::new(wall.clone()), None, Duration::from_secs(DAY));
        let t0 = c.now_ms();
        wall.advance(Duration::from_secs(30 * DAY));
        assert_eq!(c.now_ms(), t0, "a month's jump forward ages nothing");
        wall.set_unix(NOW - 10 * DAY);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(c.now_ms(), t0 + 5_000, "a jump back does not stop ageing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_adds_the_downtime_up_to_the_cap() {
        let wall = ManualClock::at_unix(NOW);
        let ck = Checkpoint {
            store_ms: 1_000,
            wall_ms: NOW * 1000,
        };
        wall.advance(Duration::from_secs(3600));
        let mut c = AgeClock::resume(Arc::new(wall.clone()), Some(ck), Duration::from_secs(DAY));
        assert_eq!(c.now_ms(), 1_000 + 3_600_000);
        wall.advance(Duration::from_secs(365 * DAY));
        let mut c = AgeClock::resume(Arc::new(wall.clone()), Some(ck), Duration::from_secs(DAY));
        assert_eq!(c.now_ms(), 1_000 + DAY * 1000, "capped at one TTL");
        wall.set_unix(NOW - DAY);
        let mut c = AgeClock::resume(Arc::new(wall), Some(ck), Duration::from_secs(DAY));
        assert_eq!(
            c.now_ms(),
            1_000,
            "a clock behind the checkpoint adds nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_set_by_ntp_after_boot_adds_the_downtime_late() {
        let ck = Checkpoint {
            store_ms: 0,
            wall_ms: NOW * 1000,
        };
        let wall = ManualClock::at_unix(10); // no RTC: 1970
        let mut c = AgeClock::resume(Arc::new(wall.clone()), Some(ck), Duration::from_secs(DAY));
        assert_eq!(c.now_ms(), 0);
        tokio::time::advance(Duration::from_secs(60)).await;
        // NTP: the real time is 2 h after the checkpoint, 1 min of it run.
        wall.set_unix(NOW + 7200);
        assert_eq!(c.now_ms(), 7_200_000);
        wall.advance(Duration::from_secs(DAY));
        assert_eq!(c.now_ms(), 7_200_000, "later jumps are ignored");
    }

    #[tokio::test(start_paused = true)]
    async fn a_jump_during_a_run_then_a_restart_ages_by_at_most_one_ttl() {
        let cap = Duration::from_secs(DAY);
        // Forward by days while running, corrected by the next boot: the
        // checkpoint carries the jumped time, the restart adds nothing.
        let wall = ManualClock::at_unix(NOW);
        let mut c = AgeClock::resume(Arc::new(wall.clone()), None, cap);
        tokio::time::advance(Duration::from_secs(60)).await;
        wall.advance(Duration::from_secs(30 * DAY));
        let ck = c.checkpoint();
        assert_eq!(ck.store_ms, 60_000);
        wall.set_unix(NOW + 120);
        let mut c = AgeClock::resume(Arc::new(wall.clone()), Some(ck), cap);
        assert_eq!(c.now_ms(), 60_000, "the forward jump aged nothing");
        // Back by days while running, corrected by the next boot: the gap
        // looks like downtime, which is capped at one TTL.
        wall.set_unix(NOW - 3 * DAY);
        let ck = c.checkpoint();
        wall.set_unix(NOW + 180);
        let mut c = AgeClock::resume(Arc::new(wall), Some(ck), cap);
        assert_eq!(c.now_ms(), 60_000 + DAY * 1000, "at most one TTL");
    }

    #[test]
    fn checkpoints_round_trip() {
        let ck = Checkpoint {
            store_ms: 5,
            wall_ms: 6,
        };
        assert_eq!(Checkpoint::decode(&ck.encode()), Some(ck));
        assert_eq!(Checkpoint::decode(&[1, 2]), None);
    }
}
