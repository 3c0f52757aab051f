//! Push failures: messages a sink could not take within the TTL (or that
//! were dropped or refused), kept `store.failure_ttl` for a local API that
//! lists, deletes and replays them, in Afero's record shape. This file is
//! the record and its stored form; the API is [`failures`](super::failures).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keys;
use crate::store::StoreError;

/// One push failure as stored: Afero's fields plus what a replay needs.
/// The admin API shows it in Afero's exact shape (`admin::failure_page`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushFailure {
    /// The failure number in decimal, as recorded; the API shows the
    /// UUID computed from the number instead (see `failure_id`).
    pub partner_push_failure_id: String,
    /// The sink (`hub` or a webhook's name).
    pub partner_id: String,
    /// When the failure was recorded (ms since the epoch).
    pub created_timestamp: u64,
    /// The last error, e.g. `503 Service Unavailable`.
    pub error_message: String,
    /// The full original message.
    pub partner_push_message: Value,
    /// The message's `type` property (needed to replay it).
    pub message_type: String,
    /// The message's id (`$.mid`), kept by replays.
    pub message_id: String,
}

/// One stored failure with its number (its key) and stored size.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRow {
    /// The failure number (`f` + this); the API shows it as a UUID
    /// ([`FailureIds`](super::failure_id::FailureIds)).
    pub number: u64,
    /// Size of the stored record, to bound the memory of an answer.
    pub bytes: usize,
    /// The record.
    pub failure: PushFailure,
}

/// Stored as: store-clock ms (8 bytes, for purging) + JSON.
pub(crate) fn encode(store_ms: u64, f: &PushFailure) -> Vec<u8> {
    let mut v = store_ms.to_be_bytes().to_vec();
    // A struct of strings, numbers and a JSON value always serialises.
    v.extend(serde_json::to_vec(f).unwrap_or_default());
    v
}

/// Reads a stored failure: its store-clock ms and the failure.
pub(crate) fn decode(b: &[u8]) -> Result<(u64, PushFailure), StoreError> {
    let bad = || StoreError::Corrupt("a push failure record is malformed".into());
    let ms = keys::u64s::<1>(b).ok_or_else(bad)?[0];
    let f = serde_json::from_slice(&b[8..]).map_err(|_| bad())?;
    Ok((ms, f))
}
