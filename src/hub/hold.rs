//! Holding the session back from connecting while the hub is not known:
//! with `[hub.provisioning]`, DPS assigns the hub first (and again when the
//! hub refuses the identity it assigned). The rest of the daemon runs
//! meanwhile: the outbox accepts, the admin API answers.

use std::time::Duration;

use super::handle::HubHandle;
use super::session::Session;

/// How often a held session beats its liveness while it waits.
const HELD_BEAT: Duration = Duration::from_secs(30);
/// Margin added to [`HELD_BEAT`] before the wait counts as stuck.
const HELD_SLACK: Duration = Duration::from_secs(30);

impl HubHandle {
    /// Keeps the session from connecting until [`HubHandle::release`]; a
    /// live connection is not dropped by it.
    pub(crate) fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Lets the session connect (again), with the configuration handed to
    /// [`HubHandle::reconfigure`] before.
    pub(crate) fn release(&self) {
        self.shared.held.send_replace(false);
    }
}

impl Session {
    /// Resolves when the session is released after a hold that starts
    /// from now on: DPS assigned a (new) identity while the session waited
    /// out the delay after the hub refused the old one, and that delay
    /// says nothing about the new identity. Never resolves otherwise.
    pub(super) fn released(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut held = self.handle.shared.held.subscribe();
        let was_held = *held.borrow_and_update();
        async move {
            let mut seen_held = was_held;
            loop {
                if held.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let now_held = *held.borrow_and_update();
                if seen_held && !now_held {
                    return;
                }
                seen_held |= now_held;
            }
        }
    }

    /// Waits while the session is held. Returns false when shutdown came
    /// first.
    pub(super) async fn wait_while_held(&mut self) -> bool {
        let mut held = self.handle.shared.held.subscribe();
        while *held.borrow_and_update() {
            self.beat.beat_expecting(HELD_BEAT + HELD_SLACK);
            tokio::select! {
                // The sender lives in the handle this session holds too.
                _ = held.changed() => {}
                () = tokio::time::sleep(HELD_BEAT) => {}
                () = self.shutdown.cancelled() => return false,
            }
        }
        true
    }
}
