//! One timer for an event loop's deadlines, moved rather than made anew on
//! every turn: a new `Sleep` per turn would add and remove a timer-wheel
//! entry per event (per PUBACK, for the hub session).

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A deadline to wait for in a `select!` arm, or none (never rings).
pub(crate) struct Alarm {
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl Alarm {
    /// An alarm with no deadline.
    pub(crate) fn new() -> Self {
        Alarm {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
        }
    }

    /// Rings at `deadline`, or never without one.
    pub(crate) fn set(&mut self, deadline: Option<Instant>) {
        self.armed = deadline.is_some();
        if let Some(at) = deadline {
            if self.sleep.deadline() != at {
                self.sleep.as_mut().reset(at);
            }
        }
    }

    /// Completes at the deadline; pending forever when there is none.
    pub(crate) async fn fired(&mut self) {
        if self.armed {
            self.sleep.as_mut().await;
        } else {
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rings_at_its_deadline_and_never_without_one() {
        let mut alarm = Alarm::new();
        let start = Instant::now();
        alarm.set(Some(start + Duration::from_secs(5)));
        alarm.fired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        alarm.set(None);
        let never = tokio::time::timeout(Duration::from_secs(3600), alarm.fired()).await;
        assert!(never.is_err(), "an alarm with no deadline never rings");

        let later = Instant::now() + Duration::from_secs(2);
        alarm.set(Some(later));
        alarm.fired().await;
        assert_eq!(Instant::now(), later);
    }
}
