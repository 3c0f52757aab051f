//! Opening the store: format version, migrations, and moving an unusable
//! store aside so the daemon starts with a fresh one (the old one is kept
//! for inspection, never deleted).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Batch, SledStorage, Storage, StoreError};

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

/// Opens the sled store in `<root>/outbox`, checks and migrates its format,
/// then runs `load` on it. When the engine reports corruption, the version
/// is unknown, or `load` finds corrupt data, the directory is renamed to
/// `<root>/outbox.corrupt-<unix seconds>` with an error log line and a new
/// store is started.
///
/// # Errors
/// I/O errors (permissions, full disk) are returned as they are: moving a
/// healthy store aside because the disk is full would lose data.
pub fn open<T>(
    root: &Path,
    cache_bytes: u64,
    now_unix: u64,
    mut load: impl FnMut(Arc<dyn Storage>) -> Result<T, StoreError>,
) -> Result<Opened<T>, StoreError> {
    let dir = root.join("outbox");
    let first = open_versioned(&dir, cache_bytes).and_then(&mut load);
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
            tracing::error!(
                error = %e,
                moved_to = %aside.display(),
                "the outbox store cannot be opened; it was moved aside for inspection and a new, \
                 empty store was started (messages in the old store will not be delivered)"
            );
            let value = load(open_versioned(&dir, cache_bytes)?)?;
            Ok(Opened {
                value,
                moved_aside: Some(aside),
            })
        }
        Err(e) => Err(e),
    }
}

fn open_versioned(dir: &Path, cache_bytes: u64) -> Result<Arc<dyn Storage>, StoreError> {
    let storage: Arc<dyn Storage> = Arc::new(SledStorage::open(dir, cache_bytes)?);
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

    #[test]
    fn a_newer_format_is_moved_aside_and_a_fresh_store_started() {
        let root = tempfile::tempdir().unwrap();
        {
            let s = SledStorage::open(&root.path().join("outbox"), 1 << 20).unwrap();
            let mut b = Batch::default();
            b.put(FORMAT_KEY.to_vec(), 99u32.to_be_bytes().to_vec());
            b.put(b"m-old".to_vec(), b"x".to_vec());
            s.apply(b).unwrap();
            s.sync().unwrap();
        }
        let opened = open(root.path(), 1 << 20, 1234, |s| s.get(b"m-old")).unwrap();
        assert_eq!(opened.value, None, "the new store is empty");
        let aside = opened.moved_aside.expect("moved aside");
        assert!(aside.ends_with("outbox.corrupt-1234") && aside.join("db").exists());
    }

    #[test]
    fn an_unversioned_store_with_data_is_migrated_in_place() {
        let root = tempfile::tempdir().unwrap();
        {
            let s = SledStorage::open(&root.path().join("outbox"), 1 << 20).unwrap();
            let mut b = Batch::default();
            b.put(b"m-old".to_vec(), b"x".to_vec());
            s.apply(b).unwrap();
            s.sync().unwrap();
        }
        let opened = open(root.path(), 1 << 20, 1, |s| {
            Ok((s.get(b"m-old")?, s.get(FORMAT_KEY)?))
        })
        .unwrap();
        assert!(opened.moved_aside.is_none());
        assert_eq!(opened.value.0, Some(b"x".to_vec()));
        assert_eq!(opened.value.1, Some(FORMAT_VERSION.to_be_bytes().to_vec()));
    }
}
