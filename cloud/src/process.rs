//! What `tether-cloud serve` needs from its process: a log on stderr and
//! a stop on SIGINT or SIGTERM.

use std::io::IsTerminal as _;

use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// Logs to stderr at `RUST_LOG`'s level (default `info`), with colours
/// only on a terminal so a redirected log has no escape codes in it.
/// Later calls are ignored (in-process tests install their own).
pub(crate) fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    // Err only when a subscriber is already installed.
    drop(installed);
}

/// Waits for SIGINT or SIGTERM.
///
/// # Errors
/// When the runtime cannot register a signal handler.
pub(crate) async fn stop_signal() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
