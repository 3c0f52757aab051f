//! tether-protocol: the wire formats both ends of tether speak, with no IO,
//! so the device daemon (`tether`) and the cloud side (`tether-cloud`)
//! share one copy of each.
//!
//! Map of the crate:
//! - [`topics`]: the topic scheme, Azure IoT Hub's `$iothub/...` and the
//!   plain-broker `devices/{id}/...`: the device's side ([`topics::Topics`])
//!   and the cloud's ([`topics::cloud`]).
//! - [`properties`]: the IoT Hub property bag (`k=v&k=v`, percent-encoded).
//! - [`sas`]: Azure IoT Hub SAS tokens minted from a device key.
//! - [`Secret`]: a string that never reaches a log (`Debug` and `Display`
//!   redact it).
#![forbid(unsafe_code)]

pub mod properties;
pub mod sas;
mod secret;
pub mod topics;

pub use secret::Secret;
