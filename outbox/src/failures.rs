//! The push-failure API as the core's entry points: list, read, delete,
//! replay, purge past `store.failure_ttl`, give up on a message. The
//! records themselves are [`failure_record`](super::failure_record).

use crate::core::{Core, SinkId};
use crate::failure_record::{decode, FailureRow, PushFailure};
use crate::keys;
use crate::message::{NewMessage, Stored};
use crate::store::StoreError;

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
    pub(crate) fn purge_failures(&self, limit: usize) -> Result<usize, StoreError> {
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
