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
//! - across a restart on the same boot (the kernel's boot id matches),
//!   adds the downtime measured by the boot clock, which no wall-clock jump
//!   moves (a service restart, an upgrade, a crash);
//! - across a reboot, adds the downtime measured by the wall clock
//!   (`wall now - checkpoint wall`), clamped to `0..=cap` (cap = the TTL):
//!   a wall clock running backwards adds nothing, one jumping forward can
//!   age messages by at most one TTL;
//! - when the wall clock is not plausible at start (no RTC yet), the
//!   downtime is added later, once NTP sets the clock, less the time run
//!   since start. A stale-but-plausible clock (a fake-hwclock file) at start
//!   counts its downtime short: messages may then live longer than the TTL
//!   by that downtime, never shorter.

use std::time::{Duration, SystemTime};

use tether_protocol::time::unix_ms;
use tokio::time::Instant;

use crate::clock::{is_plausible, SharedClock};

/// A point on the machine's boot clock: the kernel's boot id and the time
/// since boot (`CLOCK_BOOTTIME`, which also counts suspend). Two points
/// with the same id measure elapsed time whatever the wall clock did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Boot {
    /// `/proc/sys/kernel/random/boot_id`.
    pub(crate) id: u128,
    /// Milliseconds since that boot.
    pub(crate) at_ms: u64,
}

impl Boot {
    /// Now, from `/proc`; `None` where it cannot be read (then restarts
    /// fall back to the wall clock).
    pub(crate) fn current() -> Option<Boot> {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = u128::from_str_radix(&id.trim().replace('-', ""), 16).ok()?;
        let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
        let secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
        Some(Boot {
            id,
            at_ms: (secs * 1000.0) as u64,
        })
    }

    /// Time from `self` to `later`, when both are on the same boot.
    fn until(&self, later: &Boot) -> Option<u64> {
        (self.id == later.id).then(|| later.at_ms.saturating_sub(self.at_ms))
    }
}

/// A persisted checkpoint: store-clock ms, the wall clock then (ms, or 0
/// when it was not plausible) and the boot clock then (when known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    /// Store clock.
    pub(crate) store_ms: u64,
    /// Wall clock, 0 when unknown.
    pub(crate) wall_ms: u64,
    /// Boot clock.
    pub(crate) boot: Option<Boot>,
}

impl Checkpoint {
    /// 16 bytes, big-endian, then 24 more (boot id, boot ms) when the boot
    /// clock is known. Stores written before the boot clock hold 16.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = self.store_ms.to_be_bytes().to_vec();
        v.extend_from_slice(&self.wall_ms.to_be_bytes());
        if let Some(b) = self.boot {
            v.extend_from_slice(&b.id.to_be_bytes());
            v.extend_from_slice(&b.at_ms.to_be_bytes());
        }
        v
    }

    /// Reads [`Checkpoint::encode`]; `None` when malformed.
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        let boot = match b.len() {
            16 => None,
            40 => Some(Boot {
                id: u128::from_be_bytes(b.get(16..32)?.try_into().ok()?),
                at_ms: u64::from_be_bytes(b.get(32..40)?.try_into().ok()?),
            }),
            _ => return None,
        };
        Some(Self {
            store_ms: u64::from_be_bytes(b.get(0..8)?.try_into().ok()?),
            wall_ms: u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
            boot,
        })
    }
}

/// The store clock of one run.
pub(crate) struct AgeClock {
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
    /// The boot clock when this run started.
    boot: Option<Boot>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl AgeClock {
    /// Resumes from `persisted` (none for a new store); `cap` bounds how
    /// much a restart can age messages.
    pub(crate) fn resume(wall: SharedClock, persisted: Option<Checkpoint>, cap: Duration) -> Self {
        Self::resume_at(wall, persisted, cap, Boot::current())
    }

    /// [`AgeClock::resume`] with the boot clock now given.
    pub(crate) fn resume_at(
        wall: SharedClock,
        persisted: Option<Checkpoint>,
        cap: Duration,
        boot: Option<Boot>,
    ) -> Self {
        let mut ck = persisted.unwrap_or_default();
        let same_boot = ck.boot.zip(boot).and_then(|(then, now)| then.until(&now));
        if let Some(down) = same_boot {
            let down = down.min(ms(cap));
            if down > 0 {
                tracing::info!(
                    downtime_ms = down,
                    "outbox ages include the downtime since the last run (boot clock)"
                );
            }
            ck.store_ms = ck.store_ms.saturating_add(down);
            if ck.wall_ms != 0 {
                ck.wall_ms = ck.wall_ms.saturating_add(down);
            }
        }
        let mut clock = Self {
            wall,
            started: Instant::now(),
            base_ms: ck.store_ms,
            pending: (same_boot.is_none() && ck.wall_ms != 0).then_some(ck),
            cap_ms: ms(cap),
            last_ms: ck.store_ms,
            wall_pair: ck,
            boot,
        };
        clock.now_ms();
        clock
    }

    /// The store clock now, in ms. Also resolves a pending downtime once
    /// the wall clock is plausible.
    pub(crate) fn now_ms(&mut self) -> u64 {
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
                boot: None,
            };
        }
        let now = self.base_ms.saturating_add(run_ms).max(self.last_ms);
        self.last_ms = now;
        now
    }

    /// What to persist now.
    pub(crate) fn checkpoint(&mut self) -> Checkpoint {
        let now = self.now_ms();
        let run_ms = ms(self.started.elapsed());
        let boot = self.boot.map(|b| Boot {
            id: b.id,
            at_ms: b.at_ms.saturating_add(run_ms),
        });
        if self.pending.is_some() {
            // Keep the old wall pairing until the downtime is known, with
            // the store clock moved on by the time run so far.
            let ck = self.pending.unwrap_or_default();
            return Checkpoint {
                store_ms: now,
                wall_ms: ck.wall_ms.saturating_add(now.saturating_sub(ck.store_ms)),
                boot,
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
            boot,
        }
    }

    /// The wall clock (for `createdTimestamp` and error texts).
    pub(crate) fn wall_now(&self) -> SystemTime {
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
        let mut c =
            AgeClock::resume_at(Arc::new(wall.clone()), None, Duration::from_secs(DAY), None);
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
            boot: None,
        };
        wall.advance(Duration::from_secs(3600));
        let mut c = AgeClock::resume_at(
            Arc::new(wall.clone()),
            Some(ck),
            Duration::from_secs(DAY),
            None,
        );
        assert_eq!(c.now_ms(), 1_000 + 3_600_000);
        wall.advance(Duration::from_secs(365 * DAY));
        let mut c = AgeClock::resume_at(
            Arc::new(wall.clone()),
            Some(ck),
            Duration::from_secs(DAY),
            None,
        );
        assert_eq!(c.now_ms(), 1_000 + DAY * 1000, "capped at one TTL");
        wall.set_unix(NOW - DAY);
        let mut c = AgeClock::resume_at(Arc::new(wall), Some(ck), Duration::from_secs(DAY), None);
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
            boot: None,
        };
        let wall = ManualClock::at_unix(10); // no RTC: 1970
        let mut c = AgeClock::resume_at(
            Arc::new(wall.clone()),
            Some(ck),
            Duration::from_secs(DAY),
            None,
        );
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
        let mut c = AgeClock::resume_at(Arc::new(wall.clone()), None, cap, None);
        tokio::time::advance(Duration::from_secs(60)).await;
        wall.advance(Duration::from_secs(30 * DAY));
        let ck = c.checkpoint();
        assert_eq!(ck.store_ms, 60_000);
        wall.set_unix(NOW + 120);
        let mut c = AgeClock::resume_at(Arc::new(wall.clone()), Some(ck), cap, None);
        assert_eq!(c.now_ms(), 60_000, "the forward jump aged nothing");
        // Back by days while running, corrected by the next boot: the gap
        // looks like downtime, which is capped at one TTL. (A restart on
        // the same boot measures it by the boot clock instead: below.)
        wall.set_unix(NOW - 3 * DAY);
        let ck = c.checkpoint();
        wall.set_unix(NOW + 180);
        let mut c = AgeClock::resume_at(Arc::new(wall), Some(ck), cap, None);
        assert_eq!(c.now_ms(), 60_000 + DAY * 1000, "at most one TTL");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_on_the_same_boot_ages_by_the_boot_clock_whatever_the_wall_did() {
        let cap = Duration::from_secs(DAY);
        let boot = |at_ms| Some(Boot { id: 42, at_ms });
        let wall = ManualClock::at_unix(NOW);
        let mut c = AgeClock::resume_at(Arc::new(wall.clone()), None, cap, boot(1_000));
        tokio::time::advance(Duration::from_secs(60)).await;
        // Back by days while running, then a restart 2 minutes later with
        // the wall clock corrected: only the 2 minutes count.
        wall.set_unix(NOW - 3 * DAY);
        let ck = c.checkpoint();
        assert_eq!(ck.boot, boot(61_000));
        wall.set_unix(NOW + 180);
        let mut c = AgeClock::resume_at(Arc::new(wall.clone()), Some(ck), cap, boot(181_000));
        assert_eq!(c.now_ms(), 60_000 + 120_000);
        // Forward by a year with the same boot clock: still the boot clock.
        let ck = c.checkpoint();
        wall.advance(Duration::from_secs(365 * DAY));
        let mut c = AgeClock::resume_at(Arc::new(wall.clone()), Some(ck), cap, boot(191_000));
        assert_eq!(c.now_ms(), 180_000 + 10_000);
        // Another boot: back to the wall clock (capped).
        let ck = c.checkpoint();
        let other = Some(Boot { id: 43, at_ms: 5 });
        let mut c = AgeClock::resume_at(Arc::new(wall), Some(ck), cap, other);
        assert_eq!(c.now_ms(), 190_000, "the wall clock has not moved since");
    }

    #[test]
    fn the_boot_clock_is_readable_here() {
        let a = Boot::current().expect("/proc/uptime and boot_id");
        let b = Boot::current().unwrap();
        assert_eq!(a.until(&b).map(|d| d < 60_000), Some(true));
    }

    #[test]
    fn checkpoints_round_trip() {
        let mut ck = Checkpoint {
            store_ms: 5,
            wall_ms: 6,
            boot: None,
        };
        assert_eq!(Checkpoint::decode(&ck.encode()), Some(ck));
        ck.boot = Some(Boot { id: 7, at_ms: 8 });
        assert_eq!(ck.encode().len(), 40);
        assert_eq!(Checkpoint::decode(&ck.encode()), Some(ck));
        assert_eq!(Checkpoint::decode(&[1, 2]), None);
        assert_eq!(Checkpoint::decode(&[0; 24]), None);
    }
}
