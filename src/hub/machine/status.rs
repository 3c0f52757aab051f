//! The session's state as health, metrics and systemd STATUS= see it.

use std::time::SystemTime;

use super::super::refusal::Refused;
use super::Failure;

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// The wall clock reads before the build date; waiting for NTP.
    WaitingForClock,
    /// Connecting (TCP, TLS, CONNECT).
    Connecting,
    /// CONNACK received.
    Connected,
    /// Lost or refused; waiting to retry.
    Disconnected,
    /// Shut down.
    Stopped,
}

impl ConnState {
    /// Lower-case name for health JSON and logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConnState::WaitingForClock => "waiting_for_clock",
            ConnState::Connecting => "connecting",
            ConnState::Connected => "connected",
            ConnState::Disconnected => "disconnected",
            ConnState::Stopped => "stopped",
        }
    }
}

/// A snapshot of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HubStatus {
    /// Current state.
    pub state: ConnState,
    /// When it entered that state.
    pub since: SystemTime,
    /// The last failure, said plainly.
    pub last_error: Option<String>,
    /// Its class.
    pub last_failure: Option<Failure>,
    /// Expiry of the credential in use (SAS token), Unix seconds.
    pub credential_expires_at: Option<u64>,
    /// A pre-made SAS token has expired and cannot be renewed.
    pub credential_expired: bool,
    /// Every SUBACK of the current connection is in and nothing was
    /// refused: methods, desired properties and C2D messages can arrive.
    pub subscribed: bool,
    /// Successful connections since start.
    pub connects: u64,
    /// Connections lost or refused since start.
    pub disconnects: u64,
    /// Inbound messages refused since start, per reason.
    pub inbound_refused: Refused,
}

impl HubStatus {
    /// The initial status.
    pub(crate) fn new(now: SystemTime) -> Self {
        Self {
            state: ConnState::Connecting,
            since: now,
            last_error: None,
            last_failure: None,
            credential_expires_at: None,
            credential_expired: false,
            subscribed: false,
            connects: 0,
            disconnects: 0,
            inbound_refused: Refused::default(),
        }
    }

    /// Whether the hub is connected.
    pub(crate) fn is_connected(&self) -> bool {
        self.state == ConnState::Connected
    }

    /// Whether the hub is connected with every subscription in place.
    pub(crate) fn is_subscribed(&self) -> bool {
        self.is_connected() && self.subscribed
    }

    /// One line for systemd's STATUS= and logs.
    pub(crate) fn summary(&self) -> String {
        match (&self.state, &self.last_error) {
            (ConnState::Connected, _) => "hub connected".to_string(),
            (s, Some(e)) => format!("hub {}: {e}", s.as_str()),
            (s, None) => format!("hub {}", s.as_str()),
        }
    }
}
