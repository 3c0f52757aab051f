//! Process life: signals, systemd readiness/status/watchdog, and the
//! liveness beats that decide whether the watchdog is fed.

pub mod liveness;
pub mod notify;
pub mod signals;

pub use liveness::{Beat, Liveness};
