//! The salvage decisions, without IO: records from the export stream go
//! in, import groups (with the progress they complete) come out, and what
//! could not be read is counted.
//!
//! Ages carry over: a record's age is the source store's clock now minus
//! its acceptance time on that clock; the import stamps it that far back on
//! the new store's clock, so TTL expiry comes when it would have.

use serde::{Deserialize, Serialize};

use super::frame::Header;
use super::reader::Resume;
use crate::failure_record::{self, PushFailure};
use crate::message::{NewMessage, Stored};

/// Messages per import group: one group commit each.
const GROUP: usize = 512;
/// Bytes of bodies per import group.
const GROUP_BYTES: usize = 1 << 20;
/// The prefix of the progress key in the new store.
const PROGRESS: &str = "k:salvage:";

/// A message carried over from another store: same id, type, body,
/// `only_sink` and UTC time, and its age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Imported {
    /// The message.
    pub(crate) msg: NewMessage,
    /// How old it was on the source store's clock (ms).
    pub(crate) age_ms: u64,
    /// When it was first accepted (ms since the epoch).
    pub(crate) utc_ms: u64,
}

/// A push failure carried over; it gets a new number in the new store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImportedFailure {
    /// The failure as the API showed it.
    pub(crate) failure: PushFailure,
    /// Its age on the source store's clock (ms), for `failure_ttl`.
    pub(crate) age_ms: u64,
}

/// What has been salvaged from one source store, kept in the new store
/// under [`Progress::key`] and written in the same batch as the records it
/// counts, so a kill mid-salvage resumes without loss or duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    /// Where to resume.
    pub(crate) resume: Resume,
    /// Messages imported.
    pub(crate) messages: u64,
    /// Push failures imported.
    pub(crate) failures: u64,
    /// Messages every sink of the source had already finished.
    pub(crate) finished: u64,
    /// Records that could not be read (undecodable, or never reached
    /// because the engine stopped).
    pub(crate) unreadable: u64,
    /// Why the engine stopped before the end, if it did.
    pub(crate) stopped: Option<String>,
    /// The whole store was read.
    pub(crate) done: bool,
}

impl Progress {
    /// The key for the source store `source` (its id, or its directory name).
    pub(crate) fn key(source: &str) -> Vec<u8> {
        format!("{PROGRESS}{source}").into_bytes()
    }

    /// Reads a stored progress value (`None` when malformed).
    pub(crate) fn decode(v: &[u8]) -> Option<Self> {
        serde_json::from_slice(v).ok()
    }

    /// The stored value.
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Numbers, strings and bools always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One group to import atomically with the progress it completes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImportBatch {
    /// Messages, in source order.
    pub(crate) messages: Vec<Imported>,
    /// Push failures, in source order.
    pub(crate) failures: Vec<ImportedFailure>,
    /// The progress key.
    pub(crate) key: Vec<u8>,
    /// The progress once this group is durable.
    pub(crate) progress: Progress,
}

/// Builds import groups from one source's export stream.
pub(crate) struct Plan {
    key: Vec<u8>,
    progress: Progress,
    source_now_ms: u64,
    /// Below every source sink's cursor: already finished.
    finished_below: u64,
    messages: Vec<Imported>,
    failures: Vec<ImportedFailure>,
    bytes: usize,
    /// Messages + failures the source counted.
    expected: u64,
}

impl Plan {
    /// A plan for the source `header` whose progress so far is `progress`,
    /// with the source's clock at `source_now_ms`.
    pub(crate) fn new(
        key: Vec<u8>,
        header: &Header,
        progress: Progress,
        source_now_ms: u64,
    ) -> Self {
        let finished_below = header.cursors.iter().map(|(_, c)| *c).min().unwrap_or(0);
        Self {
            key,
            progress,
            source_now_ms,
            finished_below,
            messages: Vec::new(),
            failures: Vec::new(),
            bytes: 0,
            expected: header.messages + header.failures,
        }
    }

    /// Where the export should start.
    pub(crate) fn resume(&self) -> Resume {
        self.progress.resume
    }

    /// A message record from the stream.
    pub(crate) fn message(&mut self, seq: u64, record: &[u8]) {
        if seq <= self.progress.resume.after_seq {
            return;
        }
        self.progress.resume.after_seq = seq;
        if seq < self.finished_below {
            self.progress.finished += 1;
            return;
        }
        let Ok(m) = Stored::decode(seq, record) else {
            self.progress.unreadable += 1;
            return;
        };
        let msg = NewMessage {
            id: m.id,
            message_type: m.message_type,
            body: m.body,
            only_sink: m.only_sink,
        };
        if msg.check().is_err() {
            self.progress.unreadable += 1;
            return;
        }
        self.bytes += msg.body.len();
        self.messages.push(Imported {
            msg,
            age_ms: self.source_now_ms.saturating_sub(m.accepted_ms),
            utc_ms: m.utc_ms,
        });
    }

    /// A push failure record from the stream.
    pub(crate) fn failure(&mut self, id: u64, record: &[u8]) {
        if id <= self.progress.resume.after_failure {
            return;
        }
        self.progress.resume.after_failure = id;
        match failure_record::decode(record) {
            Ok((store_ms, failure)) => {
                self.bytes += record.len();
                self.failures.push(ImportedFailure {
                    failure,
                    age_ms: self.source_now_ms.saturating_sub(store_ms),
                });
            }
            Err(_) => self.progress.unreadable += 1,
        }
    }

    /// The next group, once it is large enough.
    pub(crate) fn full_batch(&mut self) -> Option<ImportBatch> {
        (self.messages.len() + self.failures.len() >= GROUP || self.bytes >= GROUP_BYTES)
            .then(|| self.take())
    }

    /// The last group, marking the salvage done: `stopped` says why the
    /// stream ended early, and what the source counted but the stream never
    /// reached counts as unreadable.
    pub(crate) fn finish(&mut self, stopped: Option<String>) -> ImportBatch {
        let mut last = self.take();
        let p = &mut self.progress;
        if let Some(why) = stopped {
            let reached = p.messages + p.finished + p.failures + p.unreadable;
            p.unreadable += self.expected.saturating_sub(reached);
            p.stopped = Some(why);
        }
        p.done = true;
        last.progress = p.clone();
        last
    }

    fn take(&mut self) -> ImportBatch {
        let messages = std::mem::take(&mut self.messages);
        let failures = std::mem::take(&mut self.failures);
        self.bytes = 0;
        self.progress.messages += messages.len() as u64;
        self.progress.failures += failures.len() as u64;
        ImportBatch {
            messages,
            failures,
            key: self.key.clone(),
            progress: self.progress.clone(),
        }
    }
}

/// The progress key's source name: the store's id, or else the directory's
/// name (stores from before ids).
pub(crate) fn source_name(header: &Header, dir_name: &str) -> String {
    header
        .store_id
        .clone()
        .unwrap_or_else(|| format!("dir:{dir_name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn header(messages: u64, failures: u64, cursor: u64) -> Header {
        Header {
            format: 1,
            store_id: Some("src".into()),
            clock: None,
            messages,
            failures,
            cursors: vec![("hub".into(), cursor)],
        }
    }

    fn record(seq: u64, accepted_ms: u64) -> Vec<u8> {
        Stored {
            seq,
            id: Uuid::new_v4(),
            message_type: "attribute".into(),
            utc_ms: 1_700_000_000_000 + seq,
            accepted_ms,
            only_sink: None,
            body: b"{}".to_vec(),
        }
        .encode()
    }

    #[test]
    fn ages_and_times_carry_over_and_finished_or_seen_records_are_skipped() {
        let mut p = Plan::new(
            Progress::key("src"),
            &header(5, 0, 2),
            Progress {
                resume: Resume {
                    after_seq: 2,
                    after_failure: 0,
                },
                ..Progress::default()
            },
            10_000,
        );
        p.message(2, &record(2, 0)); // imported in an earlier run
        p.message(3, &record(3, 4_000));
        p.message(4, b"garbage");
        let last = p.finish(None);
        assert_eq!(last.messages.len(), 1);
        assert_eq!(last.messages[0].age_ms, 6_000);
        assert_eq!(last.messages[0].utc_ms, 1_700_000_000_003);
        assert_eq!(last.progress.resume.after_seq, 4);
        assert_eq!(last.progress.unreadable, 1);
        assert!(last.progress.done && last.progress.stopped.is_none());

        let mut p = Plan::new(
            Progress::key("src"),
            &header(3, 0, 2),
            Progress::default(),
            0,
        );
        p.message(1, &record(1, 0));
        assert_eq!(p.finish(None).progress.finished, 1, "below every cursor");
    }

    #[test]
    fn what_a_stopped_engine_never_reached_counts_as_unreadable() {
        let mut p = Plan::new(
            Progress::key("src"),
            &header(1000, 10, 0),
            Progress::default(),
            0,
        );
        let mut groups = Vec::new();
        for seq in 1..=600 {
            p.message(seq, &record(seq, 0));
            groups.extend(p.full_batch());
        }
        assert_eq!(groups.len(), 1);
        let first = groups.remove(0);
        assert_eq!(first.messages.len(), GROUP);
        assert_eq!(first.progress.messages, GROUP as u64);
        assert!(!first.progress.done);
        let last = p.finish(Some("the engine panicked".into()));
        assert_eq!(last.messages.len(), 600 - GROUP);
        assert_eq!(last.progress.messages, 600);
        assert_eq!(last.progress.unreadable, 410);
        assert_eq!(
            last.progress.stopped.as_deref(),
            Some("the engine panicked")
        );
        let back = Progress::decode(&last.progress.encode()).unwrap();
        assert_eq!(back, last.progress);
    }
}
