//! Shared helpers for integration tests: each `tests/*.rs` file says `mod support;`.
//!
//! - [`broker`]: a real mosquitto per test ([`Broker`], [`BrokerOptions`]).
//! - [`certs`]: the test PKI ([`TestCa`], [`Issued`], [`untrusted_ca_pem`]).
//!
//! Not every test file uses every helper, hence `dead_code` and `unused_imports` are
//! allowed here.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod certs;
pub mod hub;
pub mod mqtt;

pub use broker::{Broker, BrokerOptions, LogMark};
pub use certs::{untrusted_ca_pem, Issued, TestCa};
pub mod http;
// The simulated MCU is `tether demo`'s.
#[cfg(feature = "demo")]
pub mod mcu;
pub mod proxy;
