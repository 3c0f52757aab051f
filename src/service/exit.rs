//! The process exit codes systemd and shells see, shared by every
//! subcommand so each component need not reach up to the composition root.

/// An invalid configuration (EX_USAGE): the unit's
/// `RestartPreventExitStatus=64` stops systemd from restart-looping.
pub const EXIT_CONFIG: i32 = 64;
/// A runtime failure (systemd restarts the service).
pub const EXIT_FAILURE: i32 = 1;
