//! Shared helpers for integration tests: each `tests/*.rs` file says `mod support;`.
//!
//! - [`broker`]: a real mosquitto per test ([`Broker`], [`BrokerOptions`]).
//! - [`certs`]: the test PKI ([`TestCa`], [`Issued`], [`untrusted_ca_pem`]).
//! - [`hub`]: a hub session in the test process.
//! - [`dps`]: a stand-in for Azure DPS answering the device API on the test broker.
//! - [`http`]: HTTP servers: the simulated controller, an upload hub, blobs.
//! - [`cloud`], [`link_cutter`]: `tether demo`'s observer and link cutter
//!   (the simulators live in `tether::demo`, one of each, used by the demo
//!   and the tests alike).
//!
//! Not every test file uses every helper, hence `dead_code` and `unused_imports` are
//! allowed here.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod certs;
pub mod dps;
pub mod hub;

pub use broker::{Broker, BrokerOptions, LogMark};
pub use certs::{untrusted_ca_pem, Issued, TestCa};
pub mod http;
// The simulated MCU is `tether demo`'s.
#[cfg(feature = "demo")]
pub mod mcu;

/// `tether demo`'s link cutter between tether and `127.0.0.1:{upstream}`,
/// on a free port; it stops when dropped.
pub async fn link_cutter(upstream: u16) -> tether::demo::proxy::Proxy {
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stop = tokio_util::sync::CancellationToken::new();
    tether::demo::proxy::Proxy::start(loopback(0), loopback(upstream), stop)
        .await
        .expect("start the link cutter on 127.0.0.1")
}

/// The cloud side (`tether demo`'s observer) on the broker's plain
/// listener `127.0.0.1:{port}`, subscribed to `filters`; it disconnects
/// when dropped.
pub async fn cloud(port: u16, filters: &[&str]) -> tether::demo::observer::Observer {
    let broker = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stop = tokio_util::sync::CancellationToken::new();
    tether::demo::observer::Observer::connect(broker, filters, stop)
        .await
        .expect("the cloud observer connected and subscribed")
}
