//! Admission: a concurrency limit with a bounded wait queue (a full queue
//! is answered 503 at once rather than left for the hub to time out), and
//! the `$rid` de-duplication cache.
//!
//! IoT Hub's `$rid`s are short per-connection counters that restart with
//! each connection, so the cache key is (connection, rid) and entries live
//! about a minute: long enough to catch a redelivered call, short enough
//! that a counter wrapping around is not mistaken for a repeat.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::hub::methods::MethodResponse;

/// At most `max_concurrent` calls run; at most `max_queued` wait.
#[derive(Debug)]
pub(crate) struct Limiter {
    slots: Semaphore,
    waiting: AtomicUsize,
    max_queued: usize,
}

/// Every slot and queue place is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl Limiter {
    /// A limiter; `max_concurrent` is at least 1.
    pub(crate) fn new(max_concurrent: usize, max_queued: usize) -> Self {
        Self {
            slots: Semaphore::new(max_concurrent.max(1)),
            waiting: AtomicUsize::new(0),
            max_queued,
        }
    }

    /// A slot, waiting in the queue if there is room.
    ///
    /// Cancel-safe: dropping the future leaves the queue (the guard below
    /// gives the place back).
    ///
    /// # Errors
    /// [`Full`] at once when no slot is free and the queue is full.
    pub(crate) async fn acquire(&self) -> Result<SemaphorePermit<'_>, Full> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_queued).then_some(n + 1)
            });
        if queued.is_err() {
            return Err(Full);
        }
        let _place = QueuePlace(&self.waiting);
        // The semaphore is never closed, so acquire only fails on close.
        self.slots.acquire().await.map_err(|_| Full)
    }
}

struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type Key = (u64, String);

enum Entry {
    /// Being served; later duplicates wait for this answer.
    InFlight(watch::Receiver<Option<MethodResponse>>),
    /// Served at the instant given.
    Done(MethodResponse, Instant),
}

/// The de-duplication cache, bounded in time and size.
pub(crate) struct Dedup {
    entries: Mutex<HashMap<Key, Entry>>,
    ttl: Duration,
    capacity: usize,
}

/// What to do with a call.
pub(crate) enum Admission<'a> {
    /// First time: serve it, then [`Ticket::finish`].
    Fresh(Ticket<'a>),
    /// Already answered: send this again.
    Cached(MethodResponse),
    /// Being served right now: wait for that answer.
    Wait(watch::Receiver<Option<MethodResponse>>),
}

impl Dedup {
    /// A cache keeping answers for `ttl`, at most `capacity` of them.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Admits a call. An empty `rid` is never de-duplicated.
    pub(crate) fn admit(&self, connection: u64, rid: &str) -> Admission<'_> {
        if rid.is_empty() {
            return Admission::Fresh(Ticket {
                dedup: self,
                key: None,
                tx: None,
            });
        }
        let key = (connection, rid.to_string());
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, e| match e {
            Entry::Done(_, at) => now.duration_since(*at) < self.ttl,
            Entry::InFlight(_) => true,
        });
        match entries.get(&key) {
            Some(Entry::Done(resp, _)) => return Admission::Cached(resp.clone()),
            Some(Entry::InFlight(rx)) => return Admission::Wait(rx.clone()),
            None => {}
        }
        if entries.len() >= self.capacity {
            let oldest = entries
                .iter()
                .filter_map(|(k, e)| match e {
                    Entry::Done(_, at) => Some((k.clone(), *at)),
                    Entry::InFlight(_) => None,
                })
                .min_by_key(|(_, at)| *at)
                .map(|(k, _)| k);
            match oldest {
                Some(k) => {
                    entries.remove(&k);
                }
                // Everything is in flight: serve without remembering.
                None => {
                    return Admission::Fresh(Ticket {
                        dedup: self,
                        key: None,
                        tx: None,
                    })
                }
            }
        }
        let (tx, rx) = watch::channel(None);
        entries.insert(key.clone(), Entry::InFlight(rx));
        Admission::Fresh(Ticket {
            dedup: self,
            key: Some(key),
            tx: Some(tx),
        })
    }
}

/// The right to serve a call. Dropping it unfinished (cancelled call)
/// forgets the call, so a repeat is served afresh.
pub(crate) struct Ticket<'a> {
    dedup: &'a Dedup,
    key: Option<Key>,
    tx: Option<watch::Sender<Option<MethodResponse>>>,
}

impl Ticket<'_> {
    /// Hands `resp` to waiting duplicates and, when `remember` is set,
    /// keeps it for later ones. Transient answers (busy) are not kept: a
    /// repeat deserves a new try.
    pub(crate) fn finish(mut self, resp: &MethodResponse, remember: bool) {
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(resp.clone()));
        }
        if let Some(key) = self.key.take() {
            let mut entries = self
                .dedup
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if remember {
                entries.insert(key, Entry::Done(resp.clone(), Instant::now()));
            } else {
                entries.remove(&key);
            }
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.dedup
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(n: u16) -> MethodResponse {
        MethodResponse {
            status: n,
            body: vec![],
        }
    }

    fn finish(d: &Dedup, conn: u64, rid: &str, n: u16) {
        match d.admit(conn, rid) {
            Admission::Fresh(t) => t.finish(&resp(n), true),
            _ => panic!("expected a fresh call"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_rid_on_the_same_connection_gets_the_cached_answer() {
        let d = Dedup::new(Duration::from_secs(60), 16);
        finish(&d, 1, "7", 200);
        assert!(matches!(d.admit(1, "7"), Admission::Cached(r) if r.status == 200));
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_rid_on_another_connection_is_a_new_call() {
        let d = Dedup::new(Duration::from_secs(60), 16);
        finish(&d, 1, "7", 200);
        assert!(matches!(d.admit(2, "7"), Admission::Fresh(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_forgotten_after_the_ttl() {
        let d = Dedup::new(Duration::from_secs(60), 16);
        finish(&d, 1, "7", 200);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(d.admit(1, "7"), Admission::Cached(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(d.admit(1, "7"), Admission::Fresh(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_duplicate_of_a_call_in_flight_waits_for_its_answer() {
        let d = Dedup::new(Duration::from_secs(60), 16);
        let Admission::Fresh(ticket) = d.admit(1, "9") else {
            panic!("fresh expected")
        };
        let Admission::Wait(mut rx) = d.admit(1, "9") else {
            panic!("wait expected")
        };
        ticket.finish(&resp(201), true);
        let got = rx.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(got, Some(resp(201)));
    }

    #[tokio::test(start_paused = true)]
    async fn unremembered_and_dropped_calls_are_served_again() {
        let d = Dedup::new(Duration::from_secs(60), 16);
        let Admission::Fresh(t) = d.admit(1, "1") else {
            panic!()
        };
        t.finish(&resp(503), false);
        assert!(matches!(d.admit(1, "1"), Admission::Fresh(_)));
        // The ticket from the line above was dropped unfinished.
        assert!(d.entries.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded_and_evicts_the_oldest_answer() {
        let d = Dedup::new(Duration::from_secs(60), 3);
        for rid in ["a", "b", "c", "d"] {
            finish(&d, 1, rid, 200);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(d.entries.lock().unwrap().len(), 3);
        assert!(matches!(d.admit(1, "a"), Admission::Fresh(_)));
    }

    #[tokio::test]
    async fn empty_rids_are_never_deduplicated() {
        let d = Dedup::new(Duration::from_secs(60), 3);
        finish(&d, 1, "", 200);
        assert!(matches!(d.admit(1, ""), Admission::Fresh(_)));
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let l = Limiter::new(1, 1);
        let first = l.acquire().await.unwrap();
        let waiter = l.acquire();
        tokio::pin!(waiter);
        // Poll once so the waiter takes the queue place.
        assert!(futures_poll_once(waiter.as_mut()).await.is_none());
        assert_eq!(l.waiting.load(Ordering::Acquire), 1);
        assert_eq!(l.acquire().await.unwrap_err(), Full);
        drop(first);
        assert!(waiter.await.is_ok());
        assert_eq!(l.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn leaving_the_queue_gives_the_place_back() {
        let l = Limiter::new(1, 1);
        let _first = l.acquire().await.unwrap();
        {
            let waiter = l.acquire();
            tokio::pin!(waiter);
            assert!(futures_poll_once(waiter.as_mut()).await.is_none());
            assert_eq!(l.waiting.load(Ordering::Acquire), 1);
        }
        assert_eq!(l.waiting.load(Ordering::Acquire), 0);
    }

    /// Polls a future once, returning its output if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
