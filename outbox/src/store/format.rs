//! Opening the store: format version, migrations, and moving an unusable
//! store aside so the daemon starts with a fresh one (the old one is kept
//! and salvaged, never deleted).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::open_marker::{self, guarded_open};
use super::{durable, redb_store, Batch, RedbStorage, Reopening, SledStorage, Storage, StoreError};
use crate::config::StoreEngine;

/// The store format this build writes (its `k:format` key): 2 = segments.
/// It reads and migrates format 1; a store of a higher format was written
/// by a newer tether and is refused ([`StoreError::UnknownVersion`]), not
/// set aside.
const FORMAT_VERSION: u32 = 2;
/// Where the version lives.
pub(crate) const FORMAT_KEY: &[u8] = b"k:format";

/// A store ready for use.
pub(crate) struct Opened<T> {
    /// What the loader built from the store.
    pub(crate) value: T,
    /// Set when an unusable store was moved aside to this path.
    pub(crate) moved_aside: Option<PathBuf>,
}

/// Opens the `engine` store in `<root>/outbox`, checks and migrates its format,
/// then runs `load` on it. Only evidence against the store itself sets it
/// aside: the engine reports corruption, the version is unknown, `load`
/// finds corrupt data, or the engine panicked while opening it (now, or in
/// an earlier run: see `super::open_marker`). The directory is then
/// renamed to `<root>/outbox.corrupt-<unix seconds>` with an error log line
/// and a new store is started; the old one is kept for salvage.
/// `progress` is called every few seconds during a migration.
///
/// # Errors
/// I/O errors (permissions, full disk) are returned as they are: moving a
/// healthy store aside because the disk is full would lose data. So is a
/// store written by the other engine ([`StoreError::OtherEngine`]).
pub(crate) fn open<T>(
    root: &Path,
    engine: StoreEngine,
    cache_bytes: u64,
    now_unix: u64,
    progress: &dyn Fn(),
    mut load: impl FnMut(Arc<dyn Storage>) -> Result<T, StoreError>,
) -> Result<Opened<T>, StoreError> {
    let dir = root.join("outbox");
    let first = guarded_open(root, || {
        open_versioned(&dir, engine, cache_bytes, progress).and_then(&mut load)
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
            let aside = set_aside(root, &dir, now_unix)?;
            // After the rename: a kill in between finds the record again
            // and sets aside what is then in `dir` (nothing, or this store).
            open_marker::clear(root);
            if let Some(aside) = &aside {
                tracing::error!(
                    error = %e,
                    moved_to = %aside.display(),
                    "the outbox store cannot be opened; it was moved aside and a new store was \
                     started (its readable messages are salvaged into the new store)"
                );
            }
            let value = load(open_versioned(&dir, engine, cache_bytes, progress)?)?;
            Ok(Opened {
                value,
                moved_aside: aside,
            })
        }
        Err(e) => Err(e),
    }
}

/// Renames `dir` to `<root>/outbox.corrupt-<unix>` (with a suffix when that
/// name is taken); `None` when there is no `dir` (it was set aside by a run
/// killed before it cleared the marker).
fn set_aside(root: &Path, dir: &Path, now_unix: u64) -> Result<Option<PathBuf>, StoreError> {
    if !dir.exists() {
        return Ok(None);
    }
    let mut aside = root.join(format!("{SET_ASIDE_PREFIX}{now_unix}"));
    let mut n = 1;
    while aside.exists() {
        aside = root.join(format!("{SET_ASIDE_PREFIX}{now_unix}-{n}"));
        n += 1;
    }
    std::fs::rename(dir, &aside).map_err(StoreError::from_io)?;
    // Durable before the new store accepts anything: else a power cut
    // brings the old directory back over the new one.
    durable::sync_dir(root).map_err(StoreError::from_io)?;
    Ok(Some(aside))
}

/// How the names of set-aside stores begin, in `store.path`: an unusable
/// store is renamed to `outbox.corrupt-<unix seconds>` and kept after
/// salvage has imported it (`tether-salvaged.json` in it then); salvage
/// finds the pending ones by this name.
pub(crate) const SET_ASIDE_PREFIX: &str = "outbox.corrupt-";

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

/// The engine whose files are in `dir`, if any (sled's `db`, redb's file):
/// `tether outbox import` refuses a directory without a store before it
/// asks the daemon.
pub fn engine_in(dir: &Path) -> Option<StoreEngine> {
    [StoreEngine::Sled, StoreEngine::Redb]
        .into_iter()
        .find(|e| dir.join(marker_file(*e)).is_file())
}

/// Opens an existing store in `dir` for reading it out (salvage, import),
/// with whichever engine wrote it, without migrating it; returns it with
/// its format version.
///
/// # Errors
/// [`StoreError::Io`] (`NotFound`) when `dir` holds no store, what the
/// engine reports otherwise, [`StoreError::UnknownVersion`] for a newer
/// format.
pub(crate) fn open_existing(
    dir: &Path,
    cache_bytes: u64,
) -> Result<(Arc<dyn Storage>, u32), StoreError> {
    let engine = engine_in(dir).ok_or_else(|| {
        StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} holds no outbox store (no sled `db` or redb `{}` file)",
                dir.display(),
                redb_store::FILE
            ),
        ))
    })?;
    let storage = open_engine(dir, engine, cache_bytes)?;
    let found =
        match storage.get(FORMAT_KEY)? {
            Some(v) => u32::from_be_bytes(v.as_slice().try_into().map_err(|_| {
                StoreError::Corrupt(format!("format version has {} bytes", v.len()))
            })?),
            // Before versioning the layout was format 1's.
            None => FORMAT_VERSION,
        };
    if found > FORMAT_VERSION {
        return Err(StoreError::UnknownVersion {
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok((storage, found))
}

fn open_versioned(
    dir: &Path,
    engine: StoreEngine,
    cache_bytes: u64,
    progress: &dyn Fn(),
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
    migrate(storage.as_ref(), found, progress)?;
    Ok(storage)
}

/// Brings a store at version `found` up to [`FORMAT_VERSION`], one step at a
/// time, each step atomic with its version bump.
fn migrate(storage: &dyn Storage, found: u32, progress: &dyn Fn()) -> Result<(), StoreError> {
    if found > FORMAT_VERSION {
        return Err(StoreError::UnknownVersion {
            found,
            supported: FORMAT_VERSION,
        });
    }
    let mut version = found;
    let mut changed = storage.get(FORMAT_KEY)?.is_none();
    while version < FORMAT_VERSION {
        version += 1;
        changed = true;
        if version == 2 {
            // 1 -> 2: segments, in resumable steps; the last one sets the
            // version.
            let mut finish = Batch::default();
            finish.put(FORMAT_KEY.to_vec(), version.to_be_bytes().to_vec());
            crate::migrate::one_to_two(storage, finish, progress)?;
            changed = false;
        }
        // 0 -> 1: the pre-release layout is identical; only the version
        // key is new.
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
            match open(root, engine, 1 << 20, now, &|| {}, &mut load) {
                Err(StoreError::Io(e)) if e.to_string().contains("lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
        open(root, engine, 1 << 20, now, &|| {}, load)
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
            write_raw(root.path(), engine, &[(b"x-old", b"x")]);
            let opened = reopen(root.path(), engine, 1, |s| {
                Ok((s.get(b"x-old")?, s.get(FORMAT_KEY)?))
            })
            .unwrap();
            assert!(opened.moved_aside.is_none());
            assert_eq!(opened.value.0, Some(b"x".to_vec()));
            assert_eq!(opened.value.1, Some(FORMAT_VERSION.to_be_bytes().to_vec()));
        }
    }

    #[test]
    fn a_format_1_store_is_migrated_on_open_and_its_messages_delivered_in_order() {
        use crate::clock::SystemClock;
        use crate::{Core, Settings};
        for engine in ENGINES {
            let root = tempfile::tempdir().unwrap();
            let msgs = {
                let s = open_engine(&root.path().join("outbox"), engine, 1 << 20).unwrap();
                crate::migrate::v1::write(s.as_ref(), 5000, &[], 1)
            };
            let settings = Settings {
                ttl: std::time::Duration::from_secs(3600),
                failure_ttl: std::time::Duration::from_secs(3600),
                max_bytes: 1 << 30,
                full_policy: crate::config::FullPolicy::RejectNew,
            };
            let opened = reopen(root.path(), engine, 1, |s| {
                assert_eq!(
                    s.get(FORMAT_KEY)?,
                    Some(FORMAT_VERSION.to_be_bytes().to_vec())
                );
                Core::load(s, &["hub".into()], settings.clone(), Arc::new(SystemClock))
            })
            .unwrap();
            assert!(opened.moved_aside.is_none());
            let core = opened.value;
            assert_eq!(core.live_messages(), 5000, "{engine:?}");
            let mut got = Vec::new();
            loop {
                let batch = core
                    .read(
                        0,
                        got.last().map_or(0, |m: &crate::message::Stored| m.seq),
                        700,
                    )
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(batch);
            }
            assert_eq!(got, msgs, "{engine:?}");
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
            write_raw(root.path(), written, &[(b"x-old", b"x")]);
            let r = reopen(root.path(), configured, 1, |s| s.get(b"x-old"));
            assert!(
                matches!(r, Err(StoreError::OtherEngine { .. })),
                "{written:?}"
            );
            let kept = root.path().join("outbox").join(marker_file(written));
            assert!(kept.exists());
            let opened = reopen(root.path(), written, 1, |s| s.get(b"x-old")).unwrap();
            assert_eq!(opened.value, Some(b"x".to_vec()));
        }
    }

    #[test]
    fn a_panic_record_sets_the_store_aside_and_an_interrupted_open_does_not() {
        for engine in ENGINES {
            let root = tempfile::tempdir().unwrap();
            write_raw(root.path(), engine, &[(b"x-old", b"x")]);
            let marker = root.path().join(open_marker::OPENING_MARKER);
            for _ in 0..5 {
                std::fs::write(&marker, "opening\n").unwrap();
                let opened = reopen(root.path(), engine, 1, |s| s.get(b"x-old")).unwrap();
                assert!(opened.moved_aside.is_none(), "{engine:?}");
                assert_eq!(opened.value, Some(b"x".to_vec()));
                assert!(!marker.exists());
            }
            std::fs::write(&marker, "panic\nindex out of bounds\n").unwrap();
            let opened = reopen(root.path(), engine, 9, |s| s.get(b"x-old")).unwrap();
            assert_eq!(opened.value, None, "a new store");
            let aside = opened.moved_aside.expect("set aside");
            assert!(aside.ends_with("outbox.corrupt-9"));
            assert!(aside.join(marker_file(engine)).exists());
            assert!(
                !marker.exists(),
                "the record is cleared once the store is aside"
            );
        }
    }

    #[test]
    fn a_panic_record_left_after_the_store_went_aside_costs_nothing() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join(open_marker::OPENING_MARKER),
            "panic\nboom\n",
        )
        .unwrap();
        let opened = reopen(root.path(), StoreEngine::Sled, 3, |s| s.get(b"k")).unwrap();
        assert!(opened.moved_aside.is_none());
    }
}
