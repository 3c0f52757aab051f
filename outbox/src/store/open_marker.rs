//! The opening marker: a small file beside the store that says how the
//! last open of the store ended, so only evidence against the *store* sets
//! it aside.
//!
//! - While the engine opens the store, the marker says `opening`. A process
//!   killed meanwhile (SIGKILL, an OOM kill, a power cut, a watchdog)
//!   leaves it so: that says nothing about the store, and the next start
//!   opens it again as usual, however often it happens.
//! - A panic hook, installed only around the open, writes the panic's
//!   message into the marker and syncs it before the panic goes on. Release
//!   builds abort on panic (`panic = "abort"`), so the record is all the
//!   next start learns: it then sets the store aside without opening it
//!   again. Where panics unwind (debug builds), the same record is left and
//!   the open reports [`StoreError::Corrupt`] at once.
//!
//! The marker is removed when the open ends without a panic, and by the
//! caller once a store with a panic record was set aside.

use std::io::Write;
use std::panic::{self, PanicHookInfo};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::StoreError;

/// The marker's file name, in `store.path` beside the `outbox` directory.
pub(crate) const OPENING_MARKER: &str = "outbox.opening";
/// What the marker holds while an open is under way.
const OPENING: &str = "opening\n";
/// The first line of a panic record.
const PANIC: &str = "panic\n";

/// Panic hooks are process-wide: opens in one process take turns, so each
/// restores exactly the hook it replaced.
static HOOK_TURN: Mutex<()> = Mutex::new(());

type PanicHook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// How the previous open of the store ended, from the marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Previous {
    /// It finished (no marker).
    Finished,
    /// The process died while opening: no evidence against the store.
    Interrupted,
    /// The engine panicked while opening the store, with this message.
    Panicked(String),
}

/// Reads the marker in `root`. An unreadable marker counts as an
/// interrupted open: only a readable panic record condemns a store.
pub(crate) fn previous(root: &Path) -> Previous {
    match std::fs::read(root.join(OPENING_MARKER)) {
        Err(_) => Previous::Finished,
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            match text.strip_prefix(PANIC) {
                Some(what) => Previous::Panicked(what.trim().to_string()),
                None => Previous::Interrupted,
            }
        }
    }
}

/// Removes the marker (and syncs the directory, best effort: a marker that
/// comes back after a power cut costs at most one more set-aside check).
pub(crate) fn clear(root: &Path) {
    let _ = std::fs::remove_file(root.join(OPENING_MARKER));
    if let Ok(d) = std::fs::File::open(root) {
        let _ = d.sync_all();
    }
}

/// Runs `open` under the marker. A panic record from an earlier run is
/// reported as [`StoreError::Corrupt`] without calling `open`; so is a
/// panic now (where panics unwind), leaving its record for the caller to
/// clear once the store is set aside.
///
/// # Errors
/// What `open` returns, or [`StoreError::Corrupt`] for a panic.
pub(crate) fn guarded_open<T>(
    root: &Path,
    open: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match previous(root) {
        Previous::Panicked(what) => {
            return Err(StoreError::Corrupt(format!(
                "the storage engine panicked while opening it in an earlier run: {what}"
            )))
        }
        Previous::Interrupted => tracing::info!(
            "an earlier open of the outbox store was interrupted (tether was killed or the \
             power failed while opening it); opening it again"
        ),
        Previous::Finished => {}
    }
    let marker = root.join(OPENING_MARKER);
    // Best effort: without the marker, a panic now (where panics abort)
    // only costs another try at the next start.
    let _ = super::durable::create_dir_all(root);
    let _ = std::fs::write(&marker, OPENING);
    let result = with_panic_record(&marker, || {
        panic::catch_unwind(panic::AssertUnwindSafe(open))
    });
    match result {
        Ok(r) => {
            clear(root);
            r
        }
        Err(payload) => Err(StoreError::Corrupt(format!(
            "the storage engine panicked while opening it: {}",
            payload_text(payload.as_ref())
        ))),
    }
}

/// Runs `f` with a panic hook that records any panic in `marker` first and
/// then calls the hook that was installed before, which is restored after.
fn with_panic_record<R>(marker: &Path, f: impl FnOnce() -> R) -> R {
    let _turn = HOOK_TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let before: Arc<PanicHook> = Arc::new(panic::take_hook());
    let chained = before.clone();
    let path = marker.to_path_buf();
    panic::set_hook(Box::new(move |info| {
        record_panic(&path, info);
        chained(info);
    }));
    let out = f();
    drop(panic::take_hook());
    match Arc::try_unwrap(before) {
        Ok(hook) => panic::set_hook(hook),
        Err(shared) => panic::set_hook(Box::new(move |info| shared(info))),
    }
    out
}

/// Writes the panic record and syncs it: with `panic = "abort"` the
/// process ends right after the hooks.
fn record_panic(marker: &Path, info: &PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let mut text = format!(
        "{PANIC}{} (thread {}",
        payload_text(info.payload()),
        thread.name().unwrap_or("unnamed")
    );
    if let Some(at) = info.location() {
        text.push_str(&format!(", at {at}"));
    }
    text.push_str(")\n");
    if let Ok(mut f) = std::fs::File::create(marker) {
        let _ = f.write_all(text.as_bytes());
        let _ = f.sync_all();
    }
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_opening_is_recorded_and_condemns_the_store_without_reopening() {
        let root = tempfile::tempdir().unwrap();
        let r: Result<(), _> = guarded_open(root.path(), || panic!("tried to serialize"));
        assert!(
            matches!(&r, Err(StoreError::Corrupt(m)) if m.contains("tried to serialize")),
            "{r:?}"
        );
        // The record is what a release build (panic = abort) leaves behind.
        let Previous::Panicked(what) = previous(root.path()) else {
            panic!("no panic record: {:?}", previous(root.path()));
        };
        assert!(what.contains("tried to serialize"), "{what}");
        let again = guarded_open(root.path(), || -> Result<(), StoreError> {
            unreachable!("a store with a panic record is not opened again")
        });
        assert!(matches!(&again, Err(StoreError::Corrupt(m)) if m.contains("earlier run")));
        clear(root.path());
        assert_eq!(previous(root.path()), Previous::Finished);
    }

    #[test]
    fn opens_interrupted_any_number_of_times_cost_nothing() {
        let root = tempfile::tempdir().unwrap();
        let marker = root.path().join(OPENING_MARKER);
        // "2" is what tethers that counted interrupted opens left behind.
        for left in [OPENING, OPENING, "2", "", OPENING] {
            for _ in 0..20 {
                std::fs::write(&marker, left).unwrap();
                assert_eq!(previous(root.path()), Previous::Interrupted);
                assert_eq!(guarded_open(root.path(), || Ok(7)).unwrap(), 7);
                assert!(!marker.exists());
            }
        }
    }

    #[test]
    fn the_hook_is_restored_after_the_open() {
        let root = tempfile::tempdir().unwrap();
        guarded_open(root.path(), || Ok(())).unwrap();
        let later = std::panic::catch_unwind(|| panic!("after the open"));
        assert!(later.is_err());
        assert_eq!(
            previous(root.path()),
            Previous::Finished,
            "a panic after the open leaves no record"
        );
    }

    #[test]
    fn engine_errors_leave_no_record() {
        let root = tempfile::tempdir().unwrap();
        let r: Result<(), _> =
            guarded_open(root.path(), || Err(StoreError::Engine("bad page".into())));
        assert!(matches!(r, Err(StoreError::Engine(_))));
        assert_eq!(previous(root.path()), Previous::Finished);
    }
}
