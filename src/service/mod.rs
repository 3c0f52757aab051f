//! Process life: signals, systemd readiness/status/watchdog, the
//! liveness beats that decide whether the watchdog is fed, and the exit
//! codes.

pub mod exit;
pub mod liveness;
pub mod notify;
pub mod signals;

pub use liveness::{Beat, Liveness};
