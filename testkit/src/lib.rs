//! The tests' kit: what the integration tests (`tests/it`, `tests/cloud`)
//! and the crates' component tests need to run tether against real
//! things. Nothing here names a `tether` type: the component tests link
//! the test build of `tether`, and the kit the normal one (both link the
//! same `tether-outbox`, whose clock trait [`ManualClock`] implements).
//!
//! - [`afero`]: Afero's push-failure record, parsed as strictly as its tech note.
//! - [`broker`]: a real mosquitto per test ([`Broker`], [`BrokerOptions`]).
//! - [`certs`]: the test PKI ([`TestCa`], [`Issued`], [`untrusted_ca_pem`]).
//! - [`child`]: part of a test run again in a child process, at trace level.
//! - [`clock`]: a wall clock that moves only when told to ([`ManualClock`]).
//! - [`dps`]: a stand-in for Azure DPS answering the device API on the test broker.
//! - [`http`]: HTTP servers: the simulated controller, an upload hub, blobs.
//! - [`mcu`]: the demo's simulated afLib4 MCU on a pty.
//! - [`poison`]: a broker passing messages of any size, and their publisher.
//! - [`cloud`], [`link_cutter`]: the demo's observer and link cutter
//!   (the simulators live in `tether_demo`, one of each, used by the demo
//!   and the tests alike).
#![forbid(unsafe_code)]

pub mod afero;
pub mod broker;
pub mod certs;
pub mod child;
pub mod clock;
pub mod dps;

pub use broker::{Broker, BrokerOptions, LogMark};
pub use certs::{untrusted_ca_pem, Issued, TestCa};
pub use clock::ManualClock;
pub mod http;
pub mod mcu;
pub mod poison;

/// The demo's link cutter between tether and `127.0.0.1:{upstream}`,
/// on a free port; it stops when dropped.
pub async fn link_cutter(upstream: u16) -> tether_demo::proxy::Proxy {
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stop = tokio_util::sync::CancellationToken::new();
    tether_demo::proxy::Proxy::start(loopback(0), loopback(upstream), stop)
        .await
        .expect("start the link cutter on 127.0.0.1")
}

/// The cloud side (the demo's observer) on the broker's plain
/// listener `127.0.0.1:{port}`, subscribed to `filters`; it disconnects
/// when dropped.
pub async fn cloud(port: u16, filters: &[&str]) -> tether_demo::observer::Observer {
    let broker = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stop = tokio_util::sync::CancellationToken::new();
    tether_demo::observer::Observer::connect(broker, filters, stop)
        .await
        .expect("the cloud observer connected and subscribed")
}
