//! systemd integration over `$NOTIFY_SOCKET`: READY=1 once config and local
//! state are up (not waiting for the hub), STATUS= with the hub state, and
//! WATCHDOG=1 at half the watchdog interval while every loop is alive.
//! Without `$NOTIFY_SOCKET` every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::hub::HubStatus;

use super::Liveness;

/// Tells systemd the service is ready.
pub(crate) fn ready() {
    send(&[NotifyState::Ready]);
}

/// Tells systemd the service is stopping.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Tells systemd a reload is in progress / done.
pub(crate) fn reloading(done: bool) {
    if done {
        send(&[NotifyState::Ready]);
    } else {
        send(&[NotifyState::Reloading]);
    }
}

/// Asks systemd for `more` time to finish starting (or stopping), and
/// feeds the watchdog: a long step before READY (a store migration) must
/// not be taken for a hang.
pub(crate) fn extend_timeout(more: Duration) {
    let usec = u32::try_from(more.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec), NotifyState::Watchdog]);
}

/// Sets the one-line status `systemctl status` shows.
pub(crate) fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// The watchdog interval systemd asked for, if any.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Feeds the watchdog while `liveness` reports no stalled loop and mirrors
/// the hub status into STATUS=. Runs until `shutdown`.
pub(crate) async fn run(
    liveness: Liveness,
    mut hub: watch::Receiver<HubStatus>,
    shutdown: CancellationToken,
) {
    let period = watchdog_interval().map(|d| d / 2);
    let mut tick = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut starving = false;
    status(&hub.borrow().summary());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = hub.changed() => {
                if changed.is_err() {
                    return;
                }
                let line = hub.borrow_and_update().summary();
                status(&line);
            }
            _ = tick.tick(), if period.is_some() => {
                match liveness.stalled() {
                    None => {
                        send(&[NotifyState::Watchdog]);
                        if starving {
                            warn!("all loops are making progress again; feeding the watchdog");
                            starving = false;
                        }
                    }
                    Some((name, silent)) => {
                        if !starving {
                            error!(loop_name = name, silent_secs = silent.as_secs(),
                                "a main loop made no progress; no longer feeding the watchdog so systemd restarts tether");
                            starving = true;
                        }
                    }
                }
            }
        }
    }
}
