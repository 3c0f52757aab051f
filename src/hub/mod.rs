//! The hub session: one MQTT 3.1.1 connection to Azure IoT Hub or a plain
//! broker, owned by a single task; the rest of the daemon holds a
//! [`HubHandle`] and registers handlers on a [`Router`] before [`start`].
//!
//! - [`topics`] and [`properties`]: the topic scheme and property bags
//!   (re-exported from `tether-protocol`, which the cloud side shares).
//! - [`credentials`]: what CONNECT presents; [`sas`] (`tether-protocol`):
//!   SAS tokens.
//! - `session`: the task owning the event loop, driving the machine;
//!   `inbound` dispatch;
//!   `refusal`: oversize or malformed inbound messages, refused alone.
//! - `tracker`: maps packet ids to delivery tokens (PUBACK notices).
//! - `machine`: every decision of the session (reconnect delays, quick
//!   drops, the silence watchdog, renewal timing, status), with no IO;
//!   its `machine::renewal` says when a token is renewed, whatever the
//!   wall clock does;
//!   `failure`: rumqttc's errors as failure classes and sentences.
//! - `provisioning`: Azure DPS assigns the hub and device id; the
//!   session waits (`hold`) until it has.
//! - `tests`: the session and provisioning against a real Mosquitto.

mod alarm;
mod connection;
pub(crate) mod credentials;
pub(crate) mod failure;
mod handle;
mod hold;
mod inbound;
pub(crate) mod machine;
pub(crate) mod methods;
pub(crate) mod options;
pub(crate) mod provisioning;
pub(crate) mod refusal;
mod session;
pub(crate) mod tracker;

#[cfg(test)]
mod tests;

// The wire formats live in tether-protocol, shared with the cloud side.
pub(crate) use tether_protocol::{properties, sas, topics};

pub(crate) use handle::HubHandle;
pub(crate) use handle::{Prepared, PublishError, Telemetry};
pub(crate) use machine::Failure;
pub(crate) use machine::{ConnState, HubStatus};
pub(crate) use methods::{C2dMessage, MethodCall, MethodResponse, Router};
#[cfg(test)]
pub(crate) use session::Hub;
pub(crate) use session::{start, Delivery};
