//! Why the demo could not run or a step failed.

/// Why the demo could not run or a step failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A local resource (file, port) failed.
    #[error("{what}: {source}")]
    Io {
        /// Which.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The embedded broker.
    #[error("MQTT broker: {0}")]
    Broker(String),
    /// `tether-cloud serve` or the method caller.
    #[error("cloud side: {0}")]
    Cloud(String),
    /// The telemetry subscriber.
    #[error("{0}")]
    Observer(String),
    /// The simulated MCU.
    #[error("simulated MCU: {0}")]
    Mcu(String),
    /// The generated configuration was refused.
    #[error("tether configuration: {0}")]
    Config(String),
    /// tether itself.
    #[error("tether: {0}")]
    Tether(String),
    /// An HTTP call of the demo's own.
    #[error("HTTP: {0}")]
    Http(String),
    /// Something expected did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A step got an answer it should not have.
    #[error("{0}")]
    Unexpected(String),
}

impl DemoError {
    pub(crate) fn io(what: &str, source: std::io::Error) -> Self {
        Self::Io {
            what: what.to_string(),
            source,
        }
    }
}
