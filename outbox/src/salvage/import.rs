//! The import path into the store: a group carried over from another store
//! goes through the same group commit as new messages, keeping each
//! message's id, UTC time and age, with the progress it completes in the
//! same batch.

//!
//! The ledger (`Ledger::append`) does the bookkeeping; this holds what
//! undoes a group that did not reach the disk.

use crate::store::Batch;

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
    pub(crate) fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::clock::SystemClock;
    use crate::config::FullPolicy;
    use crate::failure_record::PushFailure;
    use crate::message::NewMessage;
    use crate::salvage::plan::{ImportBatch, Imported, ImportedFailure, Progress};
    use crate::store::SledStorage;
    use crate::{Outbox, Settings};

    #[tokio::test]
    async fn an_imported_group_keeps_ids_times_and_ages_with_its_progress() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(SledStorage::open(dir.path(), 1 << 20).unwrap());
        let settings = Settings {
            ttl: Duration::from_secs(3600),
            failure_ttl: Duration::from_secs(3600),
            max_bytes: 1 << 30,
            full_policy: FullPolicy::RejectNew,
        };
        let outbox = Outbox::with_storage(storage, settings, &[], Arc::new(SystemClock)).unwrap();
        let msg = NewMessage::json("attribute", &serde_json::json!({"n": 1}));
        let failure = PushFailure {
            partner_push_failure_id: "77".into(),
            partner_id: "hub".into(),
            created_timestamp: 1_700_000_000_000,
            error_message: "503".into(),
            partner_push_message: serde_json::json!({"n": 2}),
            message_type: "attribute".into(),
            message_id: uuid::Uuid::new_v4().to_string(),
        };
        let progress = Progress {
            messages: 1,
            failures: 1,
            done: true,
            ..Progress::default()
        };
        let key = Progress::key("source-id");
        let receipts = outbox
            .intake
            .import(ImportBatch {
                messages: vec![Imported {
                    msg: msg.clone(),
                    age_ms: 600_000,
                    utc_ms: 1_600_000_000_000,
                }],
                failures: vec![ImportedFailure {
                    failure: failure.clone(),
                    age_ms: 1_000,
                }],
                key: key.clone(),
                progress: progress.clone(),
            })
            .await
            .unwrap();
        assert_eq!(receipts[0].id, msg.id);
        let core = &outbox.core;
        let stored = core.read(0, 0, 10).unwrap().remove(0);
        assert_eq!((stored.id, stored.utc_ms), (msg.id, 1_600_000_000_000));
        let now = core.lock().ages.now_ms();
        let age = now - stored.accepted_ms;
        assert!((600_000..610_000).contains(&age), "age {age}");
        let listed = core.failure(1).unwrap().expect("failure number 1");
        assert_eq!(listed.message_id, failure.message_id);
        assert_eq!(listed.partner_push_failure_id, "1", "a new number");
        let kept = core.storage.get(&key).unwrap().unwrap();
        assert_eq!(Progress::decode(&kept), Some(progress));
    }
}
