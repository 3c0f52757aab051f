//! What the provisioning task shows in `/healthz`
//! (`components.provisioning`): where it stands, the assignment in use
//! and the last error DPS (or the hub) gave.

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::admin::HealthCheck;

/// Where provisioning stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProvisioningState {
    /// Talking to DPS.
    Registering,
    /// Waiting before asking DPS again.
    Waiting,
    /// A hub is assigned and handed to the session.
    Assigned,
    /// DPS assigned another device id: a restart applies it.
    RestartNeeded,
    /// Shut down.
    Stopped,
}

impl ProvisioningState {
    /// Lower-case name for health JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProvisioningState::Registering => "registering",
            ProvisioningState::Waiting => "waiting",
            ProvisioningState::Assigned => "assigned",
            ProvisioningState::RestartNeeded => "restart_needed",
            ProvisioningState::Stopped => "stopped",
        }
    }
}

/// A snapshot of provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProvisioningStatus {
    /// Where it stands.
    pub(crate) state: ProvisioningState,
    /// The hub in use (cached or just assigned).
    pub(crate) assigned_hub: Option<String>,
    /// The device id in use.
    pub(crate) device_id: Option<String>,
    /// Whether the assignment in use came from the cache.
    pub(crate) from_cache: bool,
    /// The last error, said plainly; cleared by an assignment.
    pub(crate) last_error: Option<String>,
    /// Registration attempts since start.
    pub(crate) registrations: u64,
}

impl ProvisioningStatus {
    /// Before anything happened.
    pub(crate) fn new() -> Self {
        Self {
            state: ProvisioningState::Registering,
            assigned_hub: None,
            device_id: None,
            from_cache: false,
            last_error: None,
            registrations: 0,
        }
    }
}

impl Default for ProvisioningStatus {
    fn default() -> Self {
        Self::new()
    }
}

/// Provisioning's part of `/healthz`: healthy once a hub is assigned.
pub(crate) struct ProvisioningHealth(pub(crate) watch::Receiver<ProvisioningStatus>);

impl HealthCheck for ProvisioningHealth {
    fn check(&self) -> (&'static str, bool, Value) {
        let s = self.0.borrow().clone();
        let details = json!({
            "state": s.state.as_str(),
            "assignedHub": s.assigned_hub,
            "deviceId": s.device_id,
            "fromCache": s.from_cache,
            "lastError": s.last_error,
            "registrations": s.registrations,
        });
        (
            "provisioning",
            s.state == ProvisioningState::Assigned,
            details,
        )
    }
}
