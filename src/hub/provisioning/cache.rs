//! The assignment on disk, `provisioning.json` in the state directory
//! (`store.path`, never `/etc`): a restart connects straight to the
//! assigned hub. Written atomically (temporary file, fsync, rename, fsync of
//! the directory), so a power cut leaves the old record or the new one; read
//! back only when whole, for this very registration, with a usable
//! assignment. Anything else means registering again, never a crash.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tether_outbox::store::durable;

use crate::config::ProvisioningConfig;

use super::Assignment;

/// The record's file name in the state directory.
pub(crate) const CACHE_FILE: &str = "provisioning.json";
const VERSION: u32 = 1;

/// What the file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Record {
    version: u32,
    id_scope: String,
    registration_id: String,
    global_endpoint: String,
    assigned_hub: String,
    device_id: String,
    /// When DPS assigned it (Unix seconds), for people reading the file.
    assigned_at: u64,
}

/// The cached assignment cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    /// Reading, writing or removing the file failed.
    #[error(
        "cannot {action} {path}: {source}; check the permissions and free space of the state \
         directory (store.path)"
    )]
    Io {
        /// `read`, `write` or `remove`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is damaged or from another tether.
    #[error("{path} is damaged ({reason}); registering with DPS again")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file is for another registration (the config changed).
    #[error(
        "{path} holds the assignment of registration {registration:?} in ID scope {scope:?} at \
         {endpoint}, not this one; registering with DPS again"
    )]
    OtherRegistration {
        /// The file.
        path: PathBuf,
        /// Its registration id.
        registration: String,
        /// Its ID scope.
        scope: String,
        /// Its DPS endpoint.
        endpoint: String,
    },
}

/// The cached assignment for `cfg` in `dir`; `None` when there is none.
///
/// # Errors
/// When the file cannot be read, is damaged or belongs to another
/// registration: the caller registers again.
pub(crate) fn read(dir: &Path, cfg: &ProvisioningConfig) -> Result<Option<Assignment>, CacheError> {
    let path = dir.join(CACHE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Io {
                action: "read",
                path,
                source,
            })
        }
    };
    let damaged = |reason: String| CacheError::Damaged {
        path: path.clone(),
        reason,
    };
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if record.version != VERSION {
        return Err(damaged(format!(
            "version {} (expected {VERSION})",
            record.version
        )));
    }
    if record.id_scope != cfg.id_scope
        || record.registration_id != cfg.registration_id
        || record.global_endpoint != cfg.global_endpoint
    {
        return Err(CacheError::OtherRegistration {
            path,
            registration: record.registration_id,
            scope: record.id_scope,
            endpoint: record.global_endpoint,
        });
    }
    Assignment::new(Some(record.assigned_hub), Some(record.device_id))
        .map(Some)
        .map_err(damaged)
}

/// Replaces the cached assignment with `assignment`, made at `now_unix`.
///
/// # Errors
/// When the state directory or the file cannot be written.
pub(crate) fn write(
    dir: &Path,
    cfg: &ProvisioningConfig,
    assignment: &Assignment,
    now_unix: u64,
) -> Result<(), CacheError> {
    let path = dir.join(CACHE_FILE);
    let io_err = |source| CacheError::Io {
        action: "write",
        path: path.clone(),
        source,
    };
    let record = Record {
        version: VERSION,
        id_scope: cfg.id_scope.clone(),
        registration_id: cfg.registration_id.clone(),
        global_endpoint: cfg.global_endpoint.clone(),
        assigned_hub: assignment.assigned_hub.clone(),
        device_id: assignment.device_id.clone(),
        assigned_at: now_unix,
    };
    let body = serde_json::to_vec_pretty(&record).map_err(|e| io_err(io::Error::other(e)))?;
    durable::create_dir_all(dir).map_err(io_err)?;
    durable::replace_file(dir, CACHE_FILE, &body).map_err(io_err)
}

/// Forgets the cached assignment (the hub refused it).
///
/// # Errors
/// When the file exists but cannot be removed.
pub(crate) fn remove(dir: &Path) -> Result<(), CacheError> {
    let path = dir.join(CACHE_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => durable::sync_dir(dir).map_err(|source| CacheError::Io {
            action: "remove",
            path,
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CacheError::Io {
            action: "remove",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{ProvisioningAuth, SecretBytes};

    fn cfg() -> ProvisioningConfig {
        ProvisioningConfig {
            id_scope: "0ne00ABC123".into(),
            registration_id: "dev-7".into(),
            global_endpoint: "global.azure-devices-provisioning.net".into(),
            port: None,
            auth: ProvisioningAuth::Key {
                key: SecretBytes(b"k".to_vec()),
                from_group: false,
            },
            payload: None,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(2),
            poll_interval: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
        }
    }

    fn assignment() -> Assignment {
        Assignment::new(Some("h.azure-devices.net".into()), Some("dev-7".into())).unwrap()
    }

    #[test]
    fn an_assignment_written_is_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(read(&state, &cfg()).unwrap().is_none());
        write(&state, &cfg(), &assignment(), 42).unwrap();
        assert_eq!(read(&state, &cfg()).unwrap(), Some(assignment()));
        assert!(!state.join(format!("{CACHE_FILE}.tmp")).exists());
        remove(&state).unwrap();
        remove(&state).unwrap();
        assert!(read(&state, &cfg()).unwrap().is_none());
    }

    #[test]
    fn a_damaged_file_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        for junk in [
            &b"{\"version\":1,\"idScope\":"[..],
            b"\x00\xff",
            br#"{"version":9,"idScope":"0ne00ABC123","registrationId":"dev-7",
                "globalEndpoint":"global.azure-devices-provisioning.net",
                "assignedHub":"h","deviceId":"d","assignedAt":1}"#,
            br#"{"version":1,"idScope":"0ne00ABC123","registrationId":"dev-7",
                "globalEndpoint":"global.azure-devices-provisioning.net",
                "assignedHub":"h/x","deviceId":"d","assignedAt":1}"#,
        ] {
            std::fs::write(dir.path().join(CACHE_FILE), junk).unwrap();
            let err = read(dir.path(), &cfg()).unwrap_err();
            assert!(matches!(err, CacheError::Damaged { .. }), "{err}");
            assert!(err.to_string().contains("registering with DPS again"));
        }
    }

    #[test]
    fn another_registration_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &cfg(), &assignment(), 1).unwrap();
        let mut other = cfg();
        other.registration_id = "dev-8".into();
        assert!(matches!(
            read(dir.path(), &other),
            Err(CacheError::OtherRegistration { .. })
        ));
    }
}
