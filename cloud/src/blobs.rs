//! The blob store on disk, standing in for Azure Blob Storage:
//! `{dir}/{container}/{deviceId}/{name}`, written atomically (temporary
//! file, then rename), signed URLs instead of SAS tokens, and a cleanup
//! task deleting blobs past their age like Cloud Relay's weekly function.
//!
//! Containers, as in the Cloud Relay:
//! - [`SERVER_CONTAINER`]: request bodies for devices to download;
//! - [`DEVICE_CONTAINER`]: answers devices upload through file upload.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use tether_protocol::time::unix_seconds;
use tether_protocol::Secret;

use super::config::BlobConfig;
use super::error::CloudError;

/// Request bodies (Cloud Relay's `ServerFileUploadFolder` default).
pub const SERVER_CONTAINER: &str = "cloud-relay-fileupload";
/// Device uploads (the hub's `storageEndpoints.$default` container).
pub const DEVICE_CONTAINER: &str = "iothub-fileupload";

/// A blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The body is over the size limit.
    #[error("over {0} bytes")]
    TooLarge(u64),
    /// The name could escape the store or is malformed.
    #[error("unusable blob name {0:?}")]
    BadName(String),
    /// No such blob.
    #[error("no such blob")]
    NotFound,
    /// Reading the client's body failed.
    #[error("reading the body: {0}")]
    Body(String),
    /// The disk.
    #[error("blob store: {0}")]
    Io(#[from] std::io::Error),
}

/// A body that stayed in memory or went to a blob.
#[derive(Debug)]
pub enum Spooled {
    /// At most the inline limit.
    Memory(Bytes),
    /// In [`SERVER_CONTAINER`] under this relative path.
    Blob {
        /// `{deviceId}/{method}/{uuid}`.
        path: String,
        /// Bytes written.
        len: u64,
    },
}

/// The store; shared by the API and the upload endpoint.
pub struct BlobStore {
    dir: PathBuf,
    max_bytes: u64,
    key: Secret,
}

impl BlobStore {
    /// Creates the containers under `cfg.dir`.
    ///
    /// # Errors
    /// When the directories cannot be created.
    pub fn open(cfg: &BlobConfig) -> Result<Self, CloudError> {
        for c in [SERVER_CONTAINER, DEVICE_CONTAINER] {
            let d = cfg.dir.join(c);
            std::fs::create_dir_all(&d).map_err(|e| CloudError::io("blob directory", d, e))?;
        }
        let key = cfg.signing_key.clone().unwrap_or_else(|| {
            // Random per process: URLs outlive no restart, which is fine
            // for the 20-minute request blobs.
            Secret::new(format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()))
        });
        Ok(BlobStore {
            dir: cfg.dir.clone(),
            max_bytes: cfg.max_bytes,
            key,
        })
    }

    /// The size limit.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The file for `container/path`, refusing names that could escape.
    ///
    /// # Errors
    /// [`BlobError::BadName`].
    pub fn file(&self, container: &str, path: &str) -> Result<PathBuf, BlobError> {
        if ![SERVER_CONTAINER, DEVICE_CONTAINER].contains(&container) || !safe_path(path) {
            return Err(BlobError::BadName(format!("{container}/{path}")));
        }
        Ok(self.dir.join(container).join(path))
    }

    /// Reads `body` into memory while it fits `inline_limit` (and
    /// `to_blob` is false); otherwise streams it to a new request blob
    /// for `device`. The real length decides, so chunked bodies are
    /// covered too.
    ///
    /// # Errors
    /// [`BlobError::TooLarge`] past the size limit, body or disk errors.
    pub async fn spool(
        &self,
        body: Body,
        device: &str,
        method: &str,
        inline_limit: usize,
        to_blob: bool,
    ) -> Result<Spooled, BlobError> {
        let mut body = body;
        let mut head = Vec::new();
        if !to_blob {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| BlobError::Body(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    head.extend_from_slice(&data);
                    if head.len() > inline_limit {
                        break;
                    }
                }
            }
            if head.len() <= inline_limit {
                return Ok(Spooled::Memory(Bytes::from(head)));
            }
        }
        let path = format!("{device}/{method}/{}", uuid::Uuid::new_v4());
        let file = self.file(SERVER_CONTAINER, &path)?;
        let len = self.write(&file, Some(head), body).await?;
        Ok(Spooled::Blob { path, len })
    }

    /// Streams `prefix` then `body` to `file` atomically, at most the size
    /// limit; returns the length.
    ///
    /// # Errors
    /// [`BlobError::TooLarge`], body or disk errors; nothing is left
    /// behind on error.
    pub async fn write(
        &self,
        file: &Path,
        prefix: Option<Vec<u8>>,
        mut body: Body,
    ) -> Result<u64, BlobError> {
        if let Some(parent) = file.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let tmp = file.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut out = tokio::fs::File::create(&tmp).await?;
            let mut len = 0u64;
            let mut put = |chunk: &[u8]| {
                len += chunk.len() as u64;
                if len > self.max_bytes {
                    Err(BlobError::TooLarge(self.max_bytes))
                } else {
                    Ok(())
                }
            };
            if let Some(p) = prefix {
                put(&p)?;
                out.write_all(&p).await?;
            }
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| BlobError::Body(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    put(&data)?;
                    out.write_all(&data).await?;
                }
            }
            out.flush().await?;
            out.sync_all().await?;
            drop(out);
            tokio::fs::rename(&tmp, file).await?;
            Ok::<u64, BlobError>(len)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// A URL query (`?se=…&sp=…&sig=…`) granting `perm` (`r` or `w`) on
    /// `container/path` for `ttl`.
    pub fn sas(&self, perm: char, container: &str, path: &str, ttl: Duration) -> String {
        let se = unix_seconds(SystemTime::now() + ttl);
        let sig = self.signature(perm, container, path, se);
        format!("?se={se}&sp={perm}&sig={sig}")
    }

    /// Whether `query` grants `perm` on `container/path` now.
    pub fn verify(&self, perm: char, container: &str, path: &str, query: &str) -> bool {
        let get = |k: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
        };
        let (Some(se), Some(sp), Some(sig)) = (get("se"), get("sp"), get("sig")) else {
            return false;
        };
        let Ok(se) = se.parse::<u64>() else {
            return false;
        };
        if sp.len() != 1 || !sp.starts_with(perm) || se < unix_seconds(SystemTime::now()) {
            return false;
        }
        use base64::Engine as _;
        let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
            return false;
        };
        // verify_slice compares in constant time.
        self.mac(perm, container, path, se)
            .verify_slice(&sig)
            .is_ok()
    }

    fn signature(&self, perm: char, container: &str, path: &str, se: u64) -> String {
        use base64::Engine as _;
        let tag = self.mac(perm, container, path, se).finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
    }

    fn mac(&self, perm: char, container: &str, path: &str, se: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(format!("{perm}\n{se}\n{container}/{path}").as_bytes());
        mac
    }
}

/// Relative, no `.`/`..`/empty segments, no backslash or control
/// characters: cannot leave its container.
pub fn safe_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 1024
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.starts_with(".")
                && !seg.contains(|c: char| c == '\\' || c.is_control())
        })
}

/// Deletes blobs (and abandoned temporary files) older than `max_age`
/// every `every`, until `shutdown`.
pub fn spawn_cleanup(cfg: &BlobConfig, shutdown: CancellationToken) {
    let (dir, max_age, every) = (cfg.dir.clone(), cfg.max_age, cfg.cleanup_every);
    tokio::spawn(async move {
        loop {
            let dir = dir.clone();
            let removed = tokio::task::spawn_blocking(move || cleanup(&dir, max_age))
                .await
                .unwrap_or(0);
            if removed > 0 {
                tracing::info!(removed, "expired blobs deleted");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
}

/// One cleanup pass; returns how many files were deleted.
pub fn cleanup(dir: &Path, max_age: Duration) -> usize {
    let Some(cutoff) = SystemTime::now().checked_sub(max_age) else {
        return 0;
    };
    let mut removed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.modified().is_ok_and(|m| m < cutoff)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> BlobStore {
        BlobStore::open(&BlobConfig {
            dir: dir.to_path_buf(),
            max_bytes: 10,
            max_age: Duration::from_secs(60),
            cleanup_every: Duration::from_secs(60),
            signing_key: Some(Secret::new("k")),
        })
        .unwrap()
    }

    #[test]
    fn names_that_could_escape_are_refused() {
        for ok in ["dev1/RestApi/abc", "ECY:1@x/a.b"] {
            assert!(safe_path(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/../b",
            "/abs",
            "a//b",
            "a/.hidden",
            "a\\b",
            "a\nb",
        ] {
            assert!(!safe_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn signatures_bind_permission_path_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let q = s.sas(
            'r',
            SERVER_CONTAINER,
            "d/RestApi/1",
            Duration::from_secs(60),
        );
        let q = q.trim_start_matches('?');
        assert!(s.verify('r', SERVER_CONTAINER, "d/RestApi/1", q));
        assert!(!s.verify('w', SERVER_CONTAINER, "d/RestApi/1", q));
        assert!(!s.verify('r', SERVER_CONTAINER, "d/RestApi/2", q));
        assert!(!s.verify('r', DEVICE_CONTAINER, "d/RestApi/1", q));
        let expired = s.sas('r', SERVER_CONTAINER, "x", Duration::ZERO);
        let forged = expired.replace("se=", "se=9");
        assert!(!s.verify('r', SERVER_CONTAINER, "x", forged.trim_start_matches('?')));
    }

    #[tokio::test]
    async fn writes_are_bounded_and_leave_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let f = s.file(DEVICE_CONTAINER, "d/RestApi/ok").unwrap();
        assert_eq!(
            s.write(&f, None, Body::from("0123456789")).await.unwrap(),
            10
        );
        let f2 = s.file(DEVICE_CONTAINER, "d/RestApi/big").unwrap();
        let err = s.write(&f2, None, Body::from("0123456789a")).await;
        assert!(matches!(err, Err(BlobError::TooLarge(10))));
        let names: Vec<_> = std::fs::read_dir(f.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ok")]);
        assert_eq!(cleanup(dir.path(), Duration::from_secs(3600)), 0);
        assert_eq!(cleanup(dir.path(), Duration::ZERO), 1);
    }
}
