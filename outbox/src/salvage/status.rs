//! What salvage shows: `/healthz` (`components.outbox.details.salvage`) and
//! the counters behind `tether_outbox_salvaged_total` and
//! `tether_outbox_unreadable_total`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use super::plan::Progress;

/// The salvage in progress or last finished, for `/healthz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SalvageView {
    /// `running`, `done` or `failed`.
    pub state: &'static str,
    /// The store being (or last) salvaged.
    pub store: String,
    /// Messages imported from it.
    pub messages: u64,
    /// Push failures imported from it.
    pub failures: u64,
    /// Records that could not be read.
    pub unreadable: u64,
    /// Why reading stopped early, if it did.
    pub stopped: Option<String>,
    /// Why the salvage failed (it resumes at the next start), if it did.
    pub error: Option<String>,
}

/// Salvage counters and the last view; cheap to update from the salvage
/// thread.
#[derive(Debug, Default)]
pub struct Status {
    view: Mutex<Option<SalvageView>>,
    salvaged_messages: AtomicU64,
    salvaged_failures: AtomicU64,
    unreadable: AtomicU64,
}

impl Status {
    fn with(&self, f: impl FnOnce(&mut Option<SalvageView>)) {
        f(&mut self.view.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// A salvage of `store` starts, `from` what earlier runs imported.
    pub(crate) fn started(&self, store: &str, from: &Progress) {
        self.with(|v| {
            *v = Some(SalvageView {
                state: "running",
                store: store.to_string(),
                messages: from.messages,
                failures: from.failures,
                unreadable: from.unreadable,
                stopped: None,
                error: None,
            });
        });
    }

    /// A group became durable; `before` and `after` are the progress
    /// around it.
    pub(crate) fn progressed(&self, before: &Progress, after: &Progress) {
        let add = |c: &AtomicU64, a: u64, b: u64| {
            c.fetch_add(a.saturating_sub(b), Ordering::Relaxed);
        };
        add(&self.salvaged_messages, after.messages, before.messages);
        add(&self.salvaged_failures, after.failures, before.failures);
        add(&self.unreadable, after.unreadable, before.unreadable);
        self.with(|v| {
            if let Some(v) = v {
                v.messages = after.messages;
                v.failures = after.failures;
                v.unreadable = after.unreadable;
                v.stopped.clone_from(&after.stopped);
                if after.done {
                    v.state = "done";
                }
            }
        });
    }

    /// The store could not be read at all: `why`.
    pub(crate) fn unopened(&self, store: &str, why: &str) {
        self.with(|v| {
            *v = Some(SalvageView {
                state: "done",
                store: store.to_string(),
                stopped: Some(why.to_string()),
                ..SalvageView::default()
            });
        });
    }

    /// The salvage failed and resumes later.
    pub(crate) fn failed(&self, store: &str, error: String) {
        self.with(|v| match v {
            Some(v) if v.store == store => {
                v.state = "failed";
                v.error = Some(error);
            }
            _ => {
                *v = Some(SalvageView {
                    state: "failed",
                    store: store.to_string(),
                    error: Some(error),
                    ..SalvageView::default()
                });
            }
        });
    }

    /// The view for `/healthz`, when a salvage ran since start.
    pub fn view(&self) -> Option<SalvageView> {
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Messages and failures imported since start.
    pub fn salvaged(&self) -> (u64, u64) {
        (
            self.salvaged_messages.load(Ordering::Relaxed),
            self.salvaged_failures.load(Ordering::Relaxed),
        )
    }

    /// Records found unreadable since start.
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }
}
