//! Appending accepted messages (called by the intake writer with a whole
//! group of requests): the answers intake gives, and the shell that feeds
//! the group to the ledger (which decides the capacity policy) and applies
//! its batch.

use std::time::Duration;

use uuid::Uuid;

use crate::core::Core;
use crate::keys::SegKey;
use crate::message::{NewMessage, Unstorable};
use crate::salvage::{ImportBatch, Undo};
use crate::store::StoreError;

/// Sent back for each accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The message id (`$.mid`).
    pub id: Uuid,
    /// Its position in the outbox.
    pub seq: u64,
}

/// Why messages were not accepted. Nothing of a refused request is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// `reject-new` and the store is at `store.max_bytes`: HTTP 503.
    #[error("the outbox is full (store.max_bytes reached, full_policy = reject-new)")]
    Full {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The disk is full: HTTP 507.
    #[error(
        "the disk holding the outbox is full: free space on it, and intake accepts again once \
         there is room"
    )]
    DiskFull,
    /// The request alone exceeds what the store may hold: HTTP 413.
    #[error("{size} bytes exceed what the outbox accepts at once ({max} bytes)")]
    TooLarge {
        /// Request size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Any other storage failure: HTTP 500.
    #[error("the outbox could not store the messages: {0}")]
    Storage(String),
    /// A message the outbox cannot take (bad type name, body too large).
    #[error("{0}")]
    Invalid(String),
    /// The outbox has stopped.
    #[error("the outbox has stopped")]
    Closed,
}

impl From<Unstorable> for IntakeError {
    fn from(e: Unstorable) -> Self {
        match e {
            Unstorable::TooLarge { size, max } => IntakeError::TooLarge { size, max },
            Unstorable::BadType(_) => IntakeError::Invalid(e.to_string()),
        }
    }
}

impl From<StoreError> for IntakeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull(_) => IntakeError::DiskFull,
            other => IntakeError::Storage(other.to_string()),
        }
    }
}

/// One request to the writer: new messages, or a group carried over from
/// another store (salvage, import) with the progress it completes.
pub(crate) enum Request {
    /// Messages accepted now.
    New(Vec<NewMessage>),
    /// Records imported from another store.
    Import(Box<ImportBatch>),
}

impl Request {
    /// Messages it carries.
    pub(crate) fn len(&self) -> usize {
        match self {
            Request::New(m) => m.len(),
            Request::Import(b) => b.messages.len() + b.failures.len(),
        }
    }
}

/// The result of [`Core::append`]: one answer per request, what the batch
/// wrote (for a rollback when it does not reach the disk), and why the
/// engine refused the batch, if it did (then nothing was written).
pub(crate) struct Appended {
    pub answers: Vec<Result<Vec<Receipt>, IntakeError>>,
    pub written: Vec<(u64, u64)>,
    pub segments: Vec<SegKey>,
    /// What undoes the imports' other writes (failures, progress).
    pub undo: Undo,
    pub next_seq: u64,
    pub refused: Option<StoreError>,
}

impl Core {
    /// Applies one group of requests as a single batch (not yet durable).
    pub(crate) fn append(&self, jobs: Vec<Request>) -> Appended {
        let disk = self.disk_bytes();
        let w = self.writing();
        let mut st = w.state();
        let now = st.now();
        let accepted = st.ledger.append(self.storage.as_ref(), jobs, disk, now);
        for _ in 0..accepted.rejected_full {
            self.counters.rejected_full();
        }
        let batch = st.seal(accepted.batch);
        // Applying a large group takes milliseconds: the sinks read and
        // record PUBACKs meanwhile (the write order keeps other writers out).
        drop(st);
        let refused = w.apply(batch).err();
        let (written, segments, undo) = if refused.is_some() {
            self.rollback_with(&w, &accepted.written, &accepted.segments, accepted.undo);
            (Vec::new(), Vec::new(), Undo::default())
        } else {
            (accepted.written, accepted.segments, accepted.undo)
        };
        Appended {
            answers: accepted.answers,
            written,
            segments,
            undo,
            next_seq: accepted.next_seq,
            refused,
        }
    }

    /// Undoes appended messages that did not reach the disk: they count as
    /// done everywhere and are removed, so nothing half-written is sent;
    /// `undo` takes back the imports' other writes.
    pub(crate) fn rollback(&self, written: &[(u64, u64)], segments: &[SegKey], undo: Undo) {
        let w = self.writing();
        self.rollback_with(&w, written, segments, undo);
    }

    fn rollback_with(
        &self,
        w: &super::core::Writing<'_>,
        written: &[(u64, u64)],
        segments: &[SegKey],
        undo: Undo,
    ) {
        let mut st = w.state();
        let Some(batch) = st.ledger.rollback(written, segments, undo) else {
            return;
        };
        let batch = st.seal(batch);
        drop(st);
        if let Err(e) = w.apply(batch) {
            // The segments stay on disk but are done for every sink: the
            // next compaction removes them.
            tracing::warn!(error = %e, "could not remove messages that failed to reach the disk");
        }
    }
}
