//! Opening the store: format version, migrations, and moving an unusable
//! store aside so the daemon starts with a fresh one (the old one is kept
//! for inspection, never deleted).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{durable, redb_store, Batch, RedbStorage, Reopening, SledStorage, Storage, StoreError};
use crate::config::StoreEngine;

/// The layout this build writes (see `outbox::keys`).
pub const FORMAT_VERSION: u32 = 1;
/// Where the version lives.
pub(crate) const FORMAT_KEY: &[u8] = b"k:format";

/// A store ready for use.
pub struct Opened<T> {
    /// What the loader built from the store.
    pub value: T,
    /// Set when an unusable store was moved aside to this path.
    pub moved_aside: Option<PathBuf>,
}

/// Opens the `engine` store in `<root>/outbox`, checks and migrates its format,
/// then runs `load` on it. When the engine reports corruption, the version
/// is unknown, or `load` finds corrupt data, the directory is renamed to
/// `<root>/outbox.corrupt-<unix seconds>` with an error log line and a new
/// store is started.
///
/// # Errors
/// I/O errors (permissions, full disk) are returned as they are: moving a
/// healthy store aside because the disk is full would lose data. So is a
/// store written by the other engine ([`StoreError::OtherEngine`]).
pub fn open<T>(
    root: &Path,
    engine: StoreEngine,
    cache_bytes: u64,
    now_unix: u64,
    mut load: impl FnMut(Arc<dyn Storage>) -> Result<T, StoreError>,
) -> Result<Opened<T>, StoreError> {
    let dir = root.join("outbox");
    let first = guarded_open(root, || {
        open_versioned(&dir, engine, cache_bytes).and_then(&mut load)
    });
    match first {
        Ok(value) => Ok(Opened {
            value,
            moved_aside: None,
        }),
        Err(
            e
            @ (StoreError::Corrupt(_) | StoreError::UnknownVersion { .. } | StoreError::Engine(_)),
        ) => {
            let aside = root.join(format!("outbox.corrupt-{now_unix}"));
            std::fs::rename(&dir, &aside).map_err(StoreError::from_io)?;
            // Durable before the new store accepts anything: else a power
            // cut brings the old directory back over the new one.
            durable::sync_dir(root).map_err(StoreError::from_io)?;
            tracing::error!(
                error = %e,
                moved_to = %aside.display(),
                "the outbox store cannot be opened; it was moved aside for inspection and a new, \
                 empty store was started (messages in the old store will not be delivered)"
            );
            let value = load(open_versioned(&dir, engine, cache_bytes)?)?;
            Ok(Opened {
                value,
                moved_aside: Some(aside),
            })
        }
        Err(e) => Err(e),
    }
}

/// Marks an open in progress; left behind only when opening killed the
/// process.
const OPENING_MARKER: &str = "outbox.opening";
/// Opens in a row that never finished before the store counts as unusable.
/// Two, so one SIGKILL or power cut during a healthy open costs nothing.
const CRASHED_OPENS: u32 = 2;

/// Runs `open`, turning a panic into [`StoreError::Corrupt`]: sled panics
/// on some damaged files (flipped bytes) instead of returning an error.
/// Where panics abort (the release build) the process dies instead; the
/// marker file counts such deaths, and after [`CRASHED_OPENS`] of them the
/// store is treated as corrupt without being opened, so a restart loop
/// (systemd `Restart=`) ends with the store set aside.
fn guarded_open<T>(
    root: &Path,
    open: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let marker = root.join(OPENING_MARKER);
    let crashed: u32 = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    if crashed >= CRASHED_OPENS {
        let _ = std::fs::remove_file(&marker);
        return Err(StoreError::Corrupt(format!(
            "opening it ended tether {crashed} times in a row"
        )));
    }
    // Best effort: without the marker only the crash count is lost.
    let _ = durable::create_dir_all(root);
    let _ = std::fs::write(&marker, (crashed + 1).to_string());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open));
    let _ = std::fs::remove_file(&marker);
    result.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(StoreError::Corrupt(format!(
            "the storage engine failed: {what}"
        )))
    })
}

/// The file that shows which engine wrote a store directory.
fn marker_file(engine: StoreEngine) -> &'static str {
    match engine {
        StoreEngine::Sled => "db",
        StoreEngine::Redb => redb_store::FILE,
    }
}

fn engine_name(engine: StoreEngine) -> &'static str {
    match engine {
        StoreEngine::Sled => "sled",
        StoreEngine::Redb => "redb",
    }
}

/// Opens `dir` with `engine`, refusing a directory that only the other
/// engine has written: opening it would start an empty store beside the
/// queued messages.
fn open_engine(
    dir: &Path,
    engine: StoreEngine,
    cache_bytes: u64,
) -> Result<Arc<dyn Storage>, StoreError> {
    let other = match engine {
        StoreEngine::Sled => StoreEngine::Redb,
        StoreEngine::Redb => StoreEngine::Sled,
    };
    if dir.join(marker_file(other)).exists() && !dir.join(marker_file(engine)).exists() {
        return Err(StoreError::OtherEngine {
            dir: dir.to_path_buf(),
            found: engine_name(other),
            configured: engine_name(engine),
        });
    }
    let dir = dir.to_path_buf();
    Ok(match engine {
        StoreEngine::Sled => Arc::new(Reopening::open(move || {
            SledStorage::open(&dir, cache_bytes)
        })?),
        StoreEngine::Redb => Arc::new(Reopening::open(move || {
            RedbStorage::open(&dir, cache_bytes)
        })?),
    })
}

fn open_versioned(
    dir: &Path,
    engine: StoreEngine,
    cache_bytes: u64,
) -> Result<Arc<dyn Storage>, StoreError> {
    let storage = open_engine(dir, engine, cache_bytes)?;
    let found = match storage.get(FORMAT_KEY)? {
        Some(v) => {
            let bytes: [u8; 4] = v.as_slice().try_into().map_err(|_| {
                StoreError::Corrupt(format!("format version has {} bytes", v.len()))
            })?;
            u32::from_be_bytes(bytes)
        }
        // No version: a brand-new store, or one from before versioning.
        None if storage.scan(b"", &[0xFF], 1, false)?.is_empty() => FORMAT_VERSION,
        None => 0,
    };
    migrate(storage.as_ref(), found)?;
    Ok(storage)
}

/// Brings a store at version `found` up to [`FORMAT_VERSION`], one step at a
/// time, each step atomic with its version bump.
fn migrate(storage: &dyn Storage, found: u32) -> Result<(), StoreError> {
    if found > FORMAT_VERSION {
        return Err(StoreError::UnknownVersion {
            found,
            supported: FORMAT_VERSION,
        });
    }
    let mut version = found;
    let mut changed = storage.get(FORMAT_KEY)?.is_none();
    while version < FORMAT_VERSION {
        // 0 -> 1: the pre-release layout is identical; only the version key
        // is new. Later steps rewrite keys here, in the same batch.
        version += 1;
        changed = true;
        tracing::info!(to = version, "migrating the outbox store format");
    }
    if changed {
        let mut b = Batch::default();
        b.put(FORMAT_KEY.to_vec(), version.to_be_bytes().to_vec());
        storage.apply(b)?;
        storage.sync()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENGINES: [StoreEngine; 2] = [StoreEngine::Sled, StoreEngine::Redb];

    fn write_raw(root: &Path, engine: StoreEngine, pairs: &[(&[u8], &[u8])]) {
        let s = open_engine(&root.join("outbox"), engine, 1 << 20).unwrap();
        let mut b = Batch::default();
        for (k, v) in pairs {
            b.put(k.to_vec(), v.to_vec());
        }
        s.apply(b).unwrap();
        s.sync().unwrap();
    }

    /// [`open`], waiting while sled's I/O thread still holds the file lock
    /// of the handle the test just dropped.
    fn reopen<T>(
        root: &Path,
        engine: StoreEngine,
        now: u64,
        mut load: impl FnMut(Arc<dyn Storage>) -> Result<T, StoreError>,
    ) -> Result<Opened<T>, StoreError> {
        for _ in 0..250 {
            match open(root, engine, 1 << 20, now, &mut load) {
                Err(StoreError::Io(e)) if e.to_string().contains("lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
        open(root, engine, 1 << 20, now, load)
    }

    #[test]
    fn a_newer_format_is_moved_aside_and_a_fresh_store_started() {
        for engine in ENGINES {
            let root = tempfile::tempdir().unwrap();
            let newer = 99u32.to_be_bytes();
            write_raw(
                root.path(),
                engine,
                &[(FORMAT_KEY, &newer), (b"m-old", b"x")],
            );
            let opened = reopen(root.path(), engine, 1234, |s| s.get(b"m-old")).unwrap();
            assert_eq!(opened.value, None, "the new store is empty");
            let aside = opened.moved_aside.expect("moved aside");
            assert!(aside.ends_with("outbox.corrupt-1234"));
            assert!(aside.join(marker_file(engine)).exists(), "{engine:?}");
        }
    }

    #[test]
    fn an_unversioned_store_with_data_is_migrated_in_place() {
        for engine in ENGINES {
            let root = tempfile::tempdir().unwrap();
            write_raw(root.path(), engine, &[(b"m-old", b"x")]);
            let opened = reopen(root.path(), engine, 1, |s| {
                Ok((s.get(b"m-old")?, s.get(FORMAT_KEY)?))
            })
            .unwrap();
            assert!(opened.moved_aside.is_none());
            assert_eq!(opened.value.0, Some(b"x".to_vec()));
            assert_eq!(opened.value.1, Some(FORMAT_VERSION.to_be_bytes().to_vec()));
        }
    }

    #[test]
    fn a_damaged_redb_file_is_moved_aside() {
        let root = tempfile::tempdir().unwrap();
        write_raw(root.path(), StoreEngine::Redb, &[(b"m-old", b"x")]);
        let file = root.path().join("outbox").join(redb_store::FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[..4096].fill(0xA5);
        std::fs::write(&file, bytes).unwrap();
        let opened = reopen(root.path(), StoreEngine::Redb, 7, |s| s.get(b"m-old")).unwrap();
        assert_eq!(opened.value, None);
        assert!(opened
            .moved_aside
            .expect("moved aside")
            .ends_with("outbox.corrupt-7"));
    }

    #[test]
    fn the_other_engines_store_is_refused_and_kept() {
        for (written, configured) in [(ENGINES[0], ENGINES[1]), (ENGINES[1], ENGINES[0])] {
            let root = tempfile::tempdir().unwrap();
            write_raw(root.path(), written, &[(b"m-old", b"x")]);
            let r = reopen(root.path(), configured, 1, |s| s.get(b"m-old"));
            assert!(
                matches!(r, Err(StoreError::OtherEngine { .. })),
                "{written:?}"
            );
            let kept = root.path().join("outbox").join(marker_file(written));
            assert!(kept.exists());
            let opened = reopen(root.path(), written, 1, |s| s.get(b"m-old")).unwrap();
            assert_eq!(opened.value, Some(b"x".to_vec()));
        }
    }

    #[test]
    fn an_engine_panic_while_opening_counts_as_corruption() {
        let root = tempfile::tempdir().unwrap();
        let r: Result<(), _> = guarded_open(root.path(), || panic!("tried to serialize"));
        assert!(matches!(&r, Err(StoreError::Corrupt(m)) if m.contains("tried to serialize")));
        assert!(!root.path().join(OPENING_MARKER).exists());
    }

    #[test]
    fn opens_that_killed_the_process_twice_set_the_store_aside() {
        let root = tempfile::tempdir().unwrap();
        let marker = root.path().join(OPENING_MARKER);
        // One interrupted open (a SIGKILL, a power cut) is forgiven.
        std::fs::write(&marker, "1").unwrap();
        assert_eq!(guarded_open(root.path(), || Ok(7)).unwrap(), 7);
        assert!(!marker.exists());
        // Two in a row: the store is not opened again.
        std::fs::write(&marker, "2").unwrap();
        let r = guarded_open(root.path(), || -> Result<(), StoreError> {
            unreachable!("not opened")
        });
        assert!(matches!(r, Err(StoreError::Corrupt(_))));
    }
}
