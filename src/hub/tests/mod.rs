//! Component tests of the hub session against a real Mosquitto (the test
//! kit's broker harness, its DPS stand-in and the demo's cloud observer,
//! none of which carries a tether type): TLS and passwords, refusals,
//! reconnects, poison inbound messages, the plain and the Azure topic
//! schemes, SAS renewal, and provisioning through DPS.
//!
//! Run them with `cargo test -p tether --lib hub::tests::`.

mod azure;
mod poison;
mod provisioning;
mod session;
mod support;
