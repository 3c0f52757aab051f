//! Intake with group commit: callers send requests over a bounded channel
//! to a single writer thread, which takes every request waiting (up to a
//! bound), appends them in one batch, flushes and `fdatasync`s once, and
//! only then answers each request. Many messages share one disk sync, so
//! durability does not cap throughput, and memory stays bounded by the
//! channel.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::append::{IntakeError, Receipt, Request};
use crate::core::Core;
use crate::message::NewMessage;
use crate::salvage::ImportBatch;
use crate::store::StoreError;

/// Requests waiting for the writer; senders wait when it is full.
const QUEUE: usize = 512;
/// Messages per group commit.
const MAX_GROUP: usize = 4096;
/// How often the size on disk is measured again by the writer.
const DISK_REFRESH: Duration = Duration::from_millis(250);

struct Job {
    req: Request,
    reply: oneshot::Sender<Result<Vec<Receipt>, IntakeError>>,
}

/// The in-process intake API (admin HTTP, relay schedules, the firmware
/// bridge). Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Job>,
}

impl Intake {
    /// Accepts `msgs` durably: returns once they are on disk, or refuses
    /// all of them.
    ///
    /// # Errors
    /// See [`IntakeError`]; nothing of a refused request is kept.
    pub async fn submit(&self, msgs: Vec<NewMessage>) -> Result<Vec<Receipt>, IntakeError> {
        for m in &msgs {
            m.check()?;
        }
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        self.send(Request::New(msgs)).await
    }

    /// Imports a group carried over from another store (salvage): durable
    /// with its progress when this returns, or not at all.
    ///
    /// # Errors
    /// See [`IntakeError`]; nothing of a refused group is kept.
    pub(crate) async fn import(&self, group: ImportBatch) -> Result<Vec<Receipt>, IntakeError> {
        self.send(Request::Import(Box::new(group))).await
    }

    async fn send(&self, req: Request) -> Result<Vec<Receipt>, IntakeError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { req, reply })
            .await
            .map_err(|_| IntakeError::Closed)?;
        answer.await.map_err(|_| IntakeError::Closed)?
    }
}

/// Starts the writer thread. It ends when every [`Intake`] is dropped.
pub(crate) fn spawn_writer(core: Arc<Core>) -> std::io::Result<(Intake, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let handle = std::thread::Builder::new()
        .name("outbox-writer".into())
        .spawn(move || writer(&core, rx))?;
    Ok((Intake { tx }, handle))
}

fn writer(core: &Core, mut rx: mpsc::Receiver<Job>) {
    let mut measured = Instant::now();
    while let Some(first) = rx.blocking_recv() {
        let mut count = first.req.len();
        let mut jobs = vec![first];
        while count < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.req.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let (reqs, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.req, j.reply)).unzip();
        let started = Instant::now();
        let mut appended = core.append(reqs);
        // A batch the engine refused counts as a failed write too, so
        // `/healthz` reports the store unwritable however the disk fills.
        let synced = match appended.refused.take() {
            Some(e) => Err(e),
            None if appended.written.is_empty() && appended.undo.is_empty() => Ok(()),
            None => core.storage.sync(),
        };
        let answers = match synced {
            Ok(()) => {
                core.set_durable(appended.next_seq);
                core.counters.accepted(appended.written.len() as u64);
                core.counters.flushed(started.elapsed(), true, false);
                appended.answers
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox group commit failed; the requests are refused");
                core.counters.flushed(
                    started.elapsed(),
                    false,
                    matches!(e, StoreError::DiskFull(_)),
                );
                core.rollback(
                    &appended.written,
                    &appended.segments,
                    std::mem::take(&mut appended.undo),
                );
                let err = IntakeError::from(e);
                appended
                    .answers
                    .into_iter()
                    .map(|a| a.and(Err(err.clone())))
                    .collect()
            }
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            // A caller that gave up (HTTP client gone) simply misses it.
            let _ = reply.send(answer);
        }
        if measured.elapsed() >= DISK_REFRESH {
            core.refresh_disk_bytes();
            measured = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::clock::SystemClock;
    use crate::config::FullPolicy;
    use crate::store::mem::MemStorage;
    use crate::{IntakeError, NewMessage, Outbox, Settings, HUB_SINK};

    fn outbox(storage: Arc<MemStorage>) -> Outbox {
        let settings = Settings {
            ttl: Duration::from_secs(3600),
            failure_ttl: Duration::from_secs(3600),
            max_bytes: 1 << 30,
            full_policy: FullPolicy::RejectNew,
        };
        Outbox::with_storage(storage, settings, &[], Arc::new(SystemClock)).unwrap()
    }

    fn attribute(value: i64) -> NewMessage {
        NewMessage::json(
            "attribute",
            &serde_json::json!({"attributeId": 7, "value": value}),
        )
    }

    /// While syncs fail as on a full disk, intake refuses with the error
    /// the daemon answers 507 for, keeps nothing of the refused request
    /// and reports the store unwritable (the daemon's `/healthz`); once a
    /// sync works again, intake accepts, and only what it accepted is
    /// ever read for the hub.
    #[tokio::test]
    async fn a_full_disk_refuses_keeps_nothing_of_the_request_and_recovers() {
        let storage = Arc::new(MemStorage::default());
        let outbox = outbox(storage.clone());
        let core = &outbox.core;
        let hub = core.sink_id(HUB_SINK).unwrap();

        storage.disk_full.store(true, Ordering::SeqCst);
        let refused = outbox.intake.submit(vec![attribute(1), attribute(2)]).await;
        assert_eq!(refused, Err(IntakeError::DiskFull));
        let answer = IntakeError::DiskFull.to_string();
        assert!(answer.contains("free space"), "says what to do: {answer}");
        assert!(core.counters().write_failing(), "/healthz: outbox not ok");
        assert_eq!(core.counters().totals().rejected_disk, 1);
        let s = core.stats();
        assert_eq!((s.accepted, s.messages), (0, 0), "{s:?}");
        let segments = crate::ledger::segments(storage.as_ref(), 0, u64::MAX, 16).unwrap();
        assert!(segments.is_empty(), "the refused segments are removed");
        assert!(core.read(hub, 0, 100).unwrap().is_empty());

        storage.disk_full.store(false, Ordering::SeqCst);
        let accepted = outbox.intake.submit(vec![attribute(1)]).await.unwrap();
        assert!(!core.counters().write_failing(), "/healthz: outbox ok");
        let read = core.read(hub, 0, 100).unwrap();
        let ids: Vec<_> = read.iter().map(|m| m.id).collect();
        assert_eq!(ids, [accepted[0].id], "only the accepted message is sent");

        core.delivered(hub, &[(read[0].seq, read[0].encoded_len())]);
        outbox.upkeep().round(false).await;
        let s = core.stats();
        assert_eq!((s.accepted, s.messages), (1, 0), "{s:?}");
    }
}
