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
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Lets the session connect (again), with the configuration handed to
    /// [`HubHandle::reconfigure`] before.
    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }
}

impl Session {
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
