//! Afero's push-failure API as its tech note describes it, read strictly:
//! the admin API's component tests and the daemon's partner client both
//! parse tether's answers with it, so a field the note does not list fails
//! either test.

use serde::Deserialize;
use serde_json::Value;

/// A push failure as Afero's tech note lists its fields; any other field
/// fails the parse. Written from the note, not shared with the outbox's
/// stored record (`tether_outbox::PushFailure`, which also carries what a
/// replay needs): the tests check tether's answers against the contract,
/// so a drift between the two fails them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushFailure {
    /// The failure's id (a UUID), used to delete it.
    pub partner_push_failure_id: String,
    /// The partner whose push failed.
    pub partner_id: String,
    /// When the failure was recorded, ms since the Unix epoch.
    pub created_timestamp: u64,
    /// Why the push failed.
    pub error_message: String,
    /// The message that was not delivered.
    pub partner_push_message: Value,
}
