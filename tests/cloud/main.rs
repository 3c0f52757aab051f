//! The integration tests of the cloud side (`tether-cloud`): one test
//! binary, a test target of that crate because `cloud_cli` and `cloud_e2e`
//! run its binary (`CARGO_BIN_EXE_tether-cloud`). Real Mosquitto brokers,
//! a real tether in the test process; the harness is `tether-testkit`.
//!
//! Run one area with a filter, e.g. `cargo test -p tether-cloud --test cloud cloud_e2e::`.

// Scripted devices and the server under test, shared by the areas.
mod cloud_support;

mod cloud_auth;
mod cloud_cli;
mod cloud_e2e;
mod cloud_errors;
mod cloud_instances;
