//! Push failures: messages a sink could not take within the TTL (or that
//! were dropped or refused), kept `store.failure_ttl` for a local API that
//! lists, deletes and replays them, in Afero's record shape.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::core::{Core, SinkId};
use super::keys;
use super::message::{NewMessage, Stored};
use super::store::StoreError;

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

impl Core {
    /// Up to `limit` failures with numbers above `after` and below
    /// `before`, oldest first (or newest first).
    ///
    /// # Errors
    /// On storage errors.
    pub fn failure_rows(
        &self,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<FailureRow>, StoreError> {
        let from = match after {
            Some(n) => match n.checked_add(1) {
                Some(f) => keys::numbered(keys::FAIL, f).to_vec(),
                None => return Ok(Vec::new()),
            },
            None => vec![keys::FAIL],
        };
        let to = match before {
            Some(n) => keys::numbered(keys::FAIL, n).to_vec(),
            None => vec![keys::FAIL + 1],
        };
        self.storage
            .scan(&from, &to, limit, newest_first)?
            .iter()
            .map(|(k, v)| {
                let number = keys::number(k)
                    .ok_or_else(|| StoreError::Corrupt("a push failure key is malformed".into()))?;
                let (_, failure) = decode(v)?;
                Ok(FailureRow {
                    number,
                    bytes: v.len(),
                    failure,
                })
            })
            .collect()
    }

    /// Failure number `n`.
    ///
    /// # Errors
    /// On storage errors.
    pub fn failure(&self, n: u64) -> Result<Option<PushFailure>, StoreError> {
        match self.storage.get(&keys::numbered(keys::FAIL, n))? {
            Some(v) => Ok(Some(decode(&v)?.1)),
            None => Ok(None),
        }
    }

    /// Deletes failure number `n`; false when there was none. Concurrent
    /// calls for one number: exactly one gets true.
    ///
    /// # Errors
    /// On storage errors.
    pub fn delete_failure(&self, n: u64) -> Result<bool, StoreError> {
        let key = keys::numbered(keys::FAIL, n).to_vec();
        let w = self.writing();
        let mut st = w.state();
        if self.storage.get(&key)?.is_none() {
            return Ok(false);
        }
        let batch = st.ledger.forget_failures(&[key]);
        let batch = st.seal(batch);
        drop(st);
        w.apply(batch)?;
        Ok(true)
    }

    /// The message to enqueue again for a failure: same id, body and type,
    /// addressed to the failed sink only.
    pub fn replay_message(f: &PushFailure) -> NewMessage {
        NewMessage {
            id: f
                .message_id
                .parse()
                .unwrap_or_else(|_| uuid::Uuid::new_v4()),
            message_type: f.message_type.clone(),
            body: f.partner_push_message.to_string().into_bytes(),
            only_sink: Some(f.partner_id.clone()),
        }
    }

    /// Removes failures older than `store.failure_ttl`, oldest first, at
    /// most `limit` per call; returns how many.
    ///
    /// # Errors
    /// On storage errors.
    pub fn purge_failures(&self, limit: usize) -> Result<usize, StoreError> {
        let rows = self
            .storage
            .scan(&[keys::FAIL], &[keys::FAIL + 1], limit, false)?;
        let ttl = self.settings.failure_ttl.as_millis() as u64;
        let w = self.writing();
        let mut st = w.state();
        let now = st.ages.now_ms();
        let old: Vec<Vec<u8>> = rows
            .into_iter()
            .take_while(|(_, v)| keys::u64s::<1>(v).map_or(0, |[ms]| ms).saturating_add(ttl) <= now)
            .map(|(k, _)| k)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let batch = st.ledger.forget_failures(&old);
        let batch = st.seal(batch);
        drop(st);
        w.apply(batch)?;
        Ok(old.len())
    }
}

impl Core {
    /// Gives up on `msg` for `sink` at once (a permanent refusal, e.g. too
    /// large for the hub): it becomes a push failure with `error`.
    ///
    /// # Errors
    /// On storage errors.
    pub fn give_up(&self, sink: SinkId, msg: &Stored, error: &str) -> Result<(), StoreError> {
        let w = self.writing();
        let mut st = w.state();
        let now = st.now();
        let Some(batch) = st.ledger.give_up(sink, msg, error, now) else {
            return Ok(());
        };
        let batch = st.seal(batch);
        drop(st);
        w.apply(batch)
    }
}
