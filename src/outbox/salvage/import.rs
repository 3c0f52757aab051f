//! The import path into the store: a group carried over from another store
//! goes through the same group commit as new messages, keeping each
//! message's id, UTC time and age, with the progress it completes in the
//! same batch.

use super::plan::ImportBatch;
use crate::outbox::append::{IntakeError, Put, Receipt};
use crate::outbox::core::{Core, State};
use crate::outbox::failures;
use crate::outbox::message::Stored;
use crate::outbox::store::Batch;

/// What takes back a group's writes other than messages (its failures and
/// its progress) when the group does not reach the disk.
#[derive(Default)]
pub(crate) struct Undo {
    /// The writes that undo them.
    pub batch: Batch,
    /// Failures to uncount.
    pub failures: u64,
}

impl Undo {
    /// Whether there is nothing to undo.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

impl Core {
    /// Adds an imported group to the writer's batch: its messages under the
    /// capacity policy (all or none), stamped their age back on this store's
    /// clock, then its failures under new numbers and its progress.
    pub(crate) fn append_import(
        &self,
        st: &mut State,
        put: &mut Put<'_>,
        job: ImportBatch,
        undo: &mut Undo,
    ) -> Result<Vec<Receipt>, IntakeError> {
        let previous = self.storage.get(&job.key)?;
        let now = st.ages.now_ms();
        let records = job
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| Stored {
                seq: st.next_seq + i as u64,
                id: m.msg.id,
                message_type: m.msg.message_type,
                utc_ms: m.utc_ms,
                accepted_ms: now.saturating_sub(m.age_ms),
                only_sink: m.msg.only_sink,
                body: m.msg.body,
            })
            .collect();
        let receipts = self.admit(st, put, records)?;
        for f in job.failures {
            let key = failures::import(st, put.batch, now.saturating_sub(f.age_ms), f.failure);
            undo.batch.del(key);
            undo.failures += 1;
        }
        match previous {
            Some(v) => undo.batch.put(job.key.clone(), v),
            None => undo.batch.del(job.key.clone()),
        }
        put.batch.put(job.key, job.progress.encode());
        Ok(receipts)
    }
}
