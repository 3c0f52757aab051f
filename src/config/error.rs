//! Why a configuration could not be loaded. Every message names the file or
//! the key path (`hub.url`, `relay.schedule[2].path`) and what to do.

use std::io;
use std::path::PathBuf;

/// A configuration that could not be read, parsed or validated.
///
/// IO reasons are part of the message as well as the `source`, because the
/// CLI prints errors with plain `{}`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file itself could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file the config points at (secret, certificate, CA) could not be
    /// read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    File {
        /// The key naming the file, e.g. `hub.password_file`.
        key: String,
        /// The file, after resolving it against the config directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// TOML syntax error, wrong type or unknown key.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The config file (or `<text>` when parsed from a string).
        path: PathBuf,
        /// The parser's message with line and column; never the offending
        /// source line, which could hold a secret.
        message: String,
    },
    /// A value breaks a rule.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key path, e.g. `hub.connection_string`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_reads_key_colon_message() {
        let e = ConfigError::invalid("hub.connection_string", "missing DeviceId");
        assert_eq!(e.to_string(), "hub.connection_string: missing DeviceId");
    }

    #[test]
    fn io_errors_name_the_path_and_keep_the_cause_as_source() {
        let e = ConfigError::Io {
            path: "/etc/tether/tether.toml".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(
            e.to_string(),
            "cannot read config file /etc/tether/tether.toml: entity not found"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
