//! The cloud side for plain brokers (Mosquitto, EMQX, HiveMQ...): what
//! Azure IoT Hub plus the Distech Cloud Relay do for tether devices,
//! over the plain-broker topic scheme (`devices/{id}/methods/...`).
//!
//! Map:
//! - [`broker`]: the one MQTT connection: UUID `$rid`s, answers matched
//!   to their callers, presence from tether's retained status.
//!   Its topics are [`tether_protocol::topics::cloud`], the same grammar the
//!   device speaks; its TLS (Mozilla's roots plus `ca_file`) is `tls.rs`.
//! - [`serve()`] ([`serve`](mod@serve)): the Cloud Relay HTTP API; with
//!   [`auth`] (bearer tokens, JWTs), [`problem`] (the §4 error table),
//!   [`translate`] (a client's body as payload text; the payloads are
//!   [`tether_protocol::relay`]'s), [`blobs`] (the blob store on
//!   disk) and [`upload`] (IoT Hub's file-upload URL layout on it, its
//!   device credentials in `devices.rs`); the handlers share `state.rs`.
//! - [`invoke`]: `tether-cloud invoke` / `request` from the command line.
//! - [`cli`]: the subcommands' flags; [`config`]: their settings;
//!   `process.rs`: the log and the stop signals of `serve`.
//!
//! The crate depends on `tether-protocol` only, not on the device daemon.
//!
//! In-process use (tests, the demo):
//! ```no_run
//! # async fn demo() -> Result<(), tether_cloud::CloudError> {
//! use tether_cloud::{serve, BrokerConfig, ServeConfig};
//! let mut broker = BrokerConfig::new("mqtt://127.0.0.1:1883");
//! broker.allow_insecure = true;
//! let mut cfg = ServeConfig::new(([127, 0, 0, 1], 0).into(), broker, "/tmp/blobs");
//! cfg.auth.anonymous = true;
//! let stop = tokio_util::sync::CancellationToken::new();
//! let handle = serve(cfg, stop.clone()).await?;
//! println!("API and relay.upload_url: {}", handle.public_url());
//! stop.cancel();
//! handle.stopped().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod blobs;
pub mod broker;
pub mod cli;
pub mod config;
mod devices;
mod error;
pub mod invoke;
pub mod problem;
mod process;
pub mod serve;
mod state;
mod tls;
pub mod translate;
pub mod upload;

pub use broker::{Answer, Broker, CallError};
pub use config::{AuthConfig, BlobConfig, BrokerConfig, DeviceAuth, JwtConfig, ServeConfig};
pub use error::CloudError;
pub use serve::{serve, ServeHandle};
