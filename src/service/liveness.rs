//! Each main loop beats while it makes progress; the watchdog is fed only
//! while every loop beat within its allowance, so a stuck loop gets the
//! service restarted by systemd.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct BeatState {
    name: &'static str,
    last_ms: AtomicU64,
    allowance_ms: AtomicU64,
}

/// The registry of loops to watch.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    origin: Instant,
    beats: Arc<Mutex<Vec<Arc<BeatState>>>>,
}

/// One loop's heartbeat.
#[derive(Debug, Clone)]
pub(crate) struct Beat {
    origin: Instant,
    state: Arc<BeatState>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    /// An empty registry.
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            beats: Arc::default(),
        }
    }

    /// Registers a loop that must beat at least every `allowance`.
    pub(crate) fn register(&self, name: &'static str, allowance: Duration) -> Beat {
        let state = Arc::new(BeatState {
            name,
            last_ms: AtomicU64::new(ms_since(self.origin)),
            allowance_ms: AtomicU64::new(allowance.as_millis() as u64),
        });
        self.beats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(state.clone());
        Beat {
            origin: self.origin,
            state,
        }
    }

    /// The first loop that has not beaten within its allowance, with how
    /// long it has been silent.
    pub(crate) fn stalled(&self) -> Option<(&'static str, Duration)> {
        let now = ms_since(self.origin);
        let beats = self.beats.lock().unwrap_or_else(PoisonError::into_inner);
        beats.iter().find_map(|b| {
            let silent = now.saturating_sub(b.last_ms.load(Ordering::Relaxed));
            (silent > b.allowance_ms.load(Ordering::Relaxed))
                .then(|| (b.name, Duration::from_millis(silent)))
        })
    }
}

impl Beat {
    /// A beat nobody watches (component tests).
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Liveness::new().register("detached", Duration::MAX)
    }

    /// Records progress.
    pub(crate) fn beat(&self) {
        self.state
            .last_ms
            .store(ms_since(self.origin), Ordering::Relaxed);
    }

    /// Records progress and the longest silence expected before the next
    /// beat (e.g. a backoff delay or a keep-alive interval).
    pub(crate) fn beat_expecting(&self, silence: Duration) {
        self.beat();
        self.state.allowance_ms.store(
            silence.as_millis().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }
}

fn ms_since(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_loop_is_reported_and_a_beating_one_is_not() {
        let l = Liveness::new();
        let a = l.register("hub", Duration::from_secs(10));
        let b = l.register("outbox", Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(8)).await;
        a.beat();
        b.beat();
        assert_eq!(l.stalled(), None);
        tokio::time::advance(Duration::from_secs(8)).await;
        a.beat();
        tokio::time::advance(Duration::from_secs(4)).await;
        let (name, silent) = l.stalled().unwrap();
        assert_eq!(name, "outbox");
        assert_eq!(silent, Duration::from_secs(12));
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_may_announce_a_longer_silence() {
        let l = Liveness::new();
        let a = l.register("hub", Duration::from_secs(1));
        a.beat_expecting(Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(l.stalled(), None);
    }
}
