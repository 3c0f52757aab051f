//! tether: an edge gateway agent that tethers a building/IoT controller to a
//! cloud hub (Azure IoT Hub or any MQTT broker).
//!
//! Its public API is what the binary (`src/main.rs`) and the demo
//! (`tether-demo`, which hosts the daemon in its own process) use:
//! [`app`] (the daemon, [`app::Daemon`]), [`config`], [`logging`],
//! [`tls`], [`clock`], [`service::exit`] and [`outbox::cli`]. Every
//! component is crate-private; its component tests live beside it
//! (`src/<component>/tests/`), and the integration tests (`tests/it`)
//! drive the daemon through this API, its admin HTTP API and MQTT.
//!
//! Map of the crate:
//! - [`app`]: the composition root: starts every component with its own
//!   settings, runs until a stop signal, shuts down within a bound.
//! - [`config`]: the TOML file, validated into typed settings before any
//!   task starts; connection strings, secrets, the summary.
//! - `hub`: the one MQTT session to the hub: auth (SAS, x509, password),
//!   the decisions in `hub::machine` (no IO), the topic scheme of both
//!   ends ([`tether_protocol::topics`], with the property bags and SAS
//!   tokens of that crate), reconnect with backoff, method routing,
//!   telemetry, PUBACK notices; `hub::provisioning`: Azure DPS assigns
//!   the hub and device id.
//! - `backoff`: retry delays with jitter, for every retry loop.
//! - [`outbox`]: the daemon's side of the durable outbox: delivery to the
//!   hub and to webhooks, its metrics and `/healthz`, the CLI's client.
//!   The store itself (ledger, store engines, intake, delivery cursors
//!   per sink, TTL, push failures, salvage) is the `tether-outbox` crate
//!   (`outbox/`): every accepted message reaches each sink or becomes a
//!   failure. Attribute messages are `tether_protocol::afero`'s.
//! - `relay`: the `RestApi` direct method run against the controller's
//!   local REST API (limits, blobs, schedules, audit); its payloads and
//!   path rules are `tether_protocol::relay`'s.
//! - `bridge`: the afLib4 link to the MCU on a serial port, over the
//!   `firmware-bridge` crate's sans-IO core.
//! - `admin`: the local HTTP API: `/healthz`, `/metrics`, attribute
//!   intake and push failures behind a token.
//! - [`service`]: process life: signals, systemd notify and watchdog,
//!   liveness beats, exit codes.
//! - [`tls`]: rustls client configuration (ring provider).
//! - `certinfo`: a certificate's expiry, for the metrics.
//! - [`clock`]: injected wall-clock time (`tether_outbox::clock`, whose
//!   ages need it too; the daemon's API takes its `SharedClock`).
//! - [`logging`]: the tracing subscriber (colour only on a terminal).
//!
//! The cloud side for plain brokers is the `tether-cloud` crate (`cloud/`),
//! the demo and the simulators the `tether-demo` crate (`demo/`): this
//! crate is the device daemon only, with no cargo features.
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub mod app;
pub(crate) mod backoff;
pub(crate) mod bridge;
pub(crate) mod certinfo;
pub mod config;
pub(crate) mod hub;
pub mod logging;
pub mod outbox;
pub(crate) mod relay;
pub mod service;
pub mod tls;

pub use tether_outbox::clock;
