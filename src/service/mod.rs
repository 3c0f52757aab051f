//! Process life: signals, systemd readiness/status/watchdog, the
//! liveness beats that decide whether the watchdog is fed, and the exit
//! codes.

pub mod exit;
pub(crate) mod liveness;
pub(crate) mod notify;
pub(crate) mod signals;

pub(crate) use liveness::Beat;
pub(crate) use liveness::Liveness;
