//! tether-protocol: the wire formats both ends of tether speak, with no IO,
//! so the device daemon (`tether`) and the cloud side (`tether-cloud`)
//! share one copy of each.
//!
//! Map of the crate:
//! - [`topics`]: the topic scheme, Azure IoT Hub's `$iothub/...` and the
//!   plain-broker `devices/{id}/...`: the device's side ([`topics::Topics`])
//!   and the cloud's ([`topics::cloud`]).
//! - [`properties`]: the IoT Hub property bag (`k=v&k=v`, percent-encoded).
//! - [`sas`]: Azure IoT Hub SAS tokens minted from a device key;
//!   [`iothub`]: the username IoT Hub expects in CONNECT; [`dps`]: the
//!   username and SAS token the Device Provisioning Service expects.
//! - [`relay`]: the Cloud Relay's direct-method payloads, the REST request
//!   ([`relay::RestRequest`]), the rules its path keeps ([`relay::path`])
//!   and the device's answer ([`relay::Answer`]).
//! - [`afero`]: Afero's attribute data types, the attribute changes the
//!   daemon takes in and the Cloud Notify message it sends for each.
//! - [`time`]: Unix seconds and milliseconds, as SAS expiries and Afero
//!   timestamps write them.
//! - [`Secret`]: a string that never reaches a log (`Debug` and `Display`
//!   redact it).
#![forbid(unsafe_code)]

pub mod afero;
pub mod dps;
pub mod iothub;
pub mod properties;
pub mod relay;
pub mod sas;
mod secret;
pub mod time;
pub mod topics;

pub use secret::Secret;
