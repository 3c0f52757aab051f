//! Why a registration attempt did not end with an assignment: what DPS said
//! (status, errorCode, message) or what went wrong on the way, each said so
//! an operator knows what to check.

use std::time::Duration;

use crate::hub::Failure;

/// A registration attempt that did not end with an assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DpsError {
    /// 401/403: the key, token or certificate was refused.
    #[error(
        "DPS refused the credentials ({status}{detail}): check hub.provisioning.id_scope, \
         registration_id and the key or certificate, and that the enrollment exists and is enabled"
    )]
    Unauthorized {
        /// The response status.
        status: u16,
        /// `, errorCode N: message` when DPS sent them.
        detail: String,
    },
    /// 404: no such registration or ID scope.
    #[error(
        "DPS does not know this registration ({status}{detail}): check hub.provisioning.id_scope \
         and registration_id, and that an enrollment covers it"
    )]
    NotFound {
        /// The response status.
        status: u16,
        /// `, errorCode N: message` when DPS sent them.
        detail: String,
    },
    /// 429: too many requests; the request is repeated after `retry_after`.
    #[error("DPS is throttling this device (429{detail}); asking again in {}s", retry_after.as_secs())]
    Throttled {
        /// How long DPS asked to wait.
        retry_after: Duration,
        /// `, errorCode N: message` when DPS sent them.
        detail: String,
    },
    /// 5xx: DPS could not serve the request now.
    #[error("DPS failed to serve the request ({status}{detail}); trying again later")]
    Server {
        /// The response status.
        status: u16,
        /// `, errorCode N: message` when DPS sent them.
        detail: String,
    },
    /// Another 4xx: the request itself was refused.
    #[error(
        "DPS rejected the registration request ({status}{detail}): check \
         hub.provisioning.payload and registration_id"
    )]
    Rejected {
        /// The response status.
        status: u16,
        /// `, errorCode N: message` when DPS sent them.
        detail: String,
    },
    /// The registration ended `failed` or `disabled`.
    #[error(
        "DPS could not assign a hub: the registration is {status}{detail}; check the \
         enrollment (enabled, allocation policy, linked IoT hubs) in the DPS instance"
    )]
    NotAssigned {
        /// `failed` or `disabled`.
        status: String,
        /// `, errorCode N: message` when DPS sent them.
        detail: String,
    },
    /// An answer tether cannot read.
    #[error("DPS sent an answer tether cannot read ({0}); trying again later")]
    Unreadable(String),
    /// No answer in time.
    #[error("DPS did not answer within {}s; trying again later", .0.as_secs())]
    Timeout(Duration),
    /// The broker side refused `$dps/registrations/res/#`.
    #[error("DPS refused the subscription to its response topic; trying again later")]
    SubscribeRefused,
    /// Connecting to DPS failed or the connection was lost.
    #[error("{message}")]
    Connection {
        /// Its class, for the backoff floor.
        failure: Failure,
        /// What happened (names DPS's host and port).
        message: String,
    },
}

impl DpsError {
    /// The class of the failure, for the delay before trying again: what
    /// only a change in the cloud (or the config) can fix is not retried
    /// quickly.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            DpsError::Unauthorized { .. }
            | DpsError::NotFound { .. }
            | DpsError::Rejected { .. }
            | DpsError::NotAssigned { .. } => Failure::Auth,
            DpsError::Throttled { .. } | DpsError::Server { .. } => Failure::Throttled,
            DpsError::Unreadable(_) | DpsError::Timeout(_) | DpsError::SubscribeRefused => {
                Failure::Network
            }
            DpsError::Connection { failure, .. } => *failure,
        }
    }
}

/// `, errorCode N: message` from what DPS sent, or "".
pub(super) fn detail(code: Option<u64>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(", errorCode {c}: {m}"),
        (Some(c), None) => format!(", errorCode {c}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}
