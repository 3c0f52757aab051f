//! The one error type of the cloud side's setup paths (configuration,
//! TLS, binding). Per-request failures are [`super::problem::ApiError`].

use std::net::SocketAddr;
use std::path::PathBuf;

/// `serve` or `invoke` could not start.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// A setting is missing or malformed; `key` names it as in the TOML
    /// file or the flag.
    #[error("{key}: {reason}")]
    Config {
        /// The setting at fault.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file named by a setting could not be read or created.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What the file is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The broker's TLS material is unusable; the text names the file.
    #[error("broker TLS: {0}")]
    Tls(String),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl CloudError {
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        CloudError::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CloudError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
