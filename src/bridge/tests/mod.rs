//! Component tests of the bridge against the demo's simulated afLib4 MCU
//! (`tether_demo::mcu`, through `tether_testkit::mcu`, neither carrying a
//! tether type) over a real pty: the link, serial-line chaos, and the cloud
//! side through a real Mosquitto.
//!
//! Run them with `cargo test -p tether --lib bridge::tests::`.

mod chaos_serial;
mod cloud;
mod link;
mod rig;
