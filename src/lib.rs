//! tether: an edge gateway agent that tethers a building/IoT controller to a
//! cloud hub (Azure IoT Hub or any MQTT broker).
//!
//! Map of the crate:
//! - [`config`]: the TOML file, validated into typed settings.
//! - [`hub`]: the one MQTT session to the hub: auth (SAS, x509, password),
//!   topic scheme, reconnect with backoff, method routing, telemetry.
//! - [`backoff`]: retry delays with jitter, for every retry loop.
//! - [`tls`]: rustls client configuration (ring provider).
//! - [`clock`]: injected wall-clock time.
//! - [`service`]: process life: signals, systemd notify and watchdog.
//! - [`app`]: the composition root wiring everything together.
//! - `demo` (feature `demo`, on by default): `tether demo`, everything
//!   in one process with simulated controller, MCU and broker.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod backoff;
pub mod bridge;
pub mod certinfo;
pub mod clock;
#[cfg(feature = "cloud")]
pub mod cloud;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod hub;
pub mod logging;
pub mod outbox;
pub mod relay;
pub mod service;
pub mod tls;
