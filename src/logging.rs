//! Logging via `tracing`: level from `RUST_LOG` or the config, plain text
//! without timestamps or colours under systemd (the journal adds both), and
//! colours only when stderr is a terminal, so a log redirected to a file or
//! a pipe has no escape codes in it.
//!
//! The filter is `tracing_subscriber`'s `Targets` (`info`,
//! `tether=debug,sled=warn`), not `EnvFilter`: span and field filters are
//! not worth the regular-expression engine they link in, 216 KiB of the
//! binary's code, which a controller keeps resident (issue 12's idle budget).

use std::io::IsTerminal as _;

use tracing_subscriber::filter::{ParseError, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Parses a log filter as `[log] level` and `RUST_LOG` take it: comma-separated
/// `level` or `target=level` directives.
pub fn parse_filter(text: &str) -> Result<Targets, ParseError> {
    text.parse()
}

/// Installs the global subscriber. Safe to call once per process; later
/// calls are ignored (tests).
pub fn init(level: &str, format: LogFormat) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let (filter, bad_env) = match from_env.as_deref().map(parse_filter) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (config_filter(level), Some(e)),
        None => (config_filter(level), None),
    };
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    // The filter sits on the registry, under the formatter, so it alone
    // sets the level (the `fmt()` builder would cap it at INFO) and the
    // global maximum level stays the filter's.
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match (format, under_journal) {
        (LogFormat::Json, _) => registry.with(layer.json().flatten_event(true)).try_init(),
        (LogFormat::Text, true) => registry
            .with(layer.without_time().with_ansi(false))
            .try_init(),
        (LogFormat::Text, false) => registry
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
    };
    // Err only when a subscriber is already installed (tests).
    drop(result);
    if let Some(e) = bad_env {
        tracing::warn!(
            error = %e,
            level,
            "RUST_LOG is not a valid filter, so [log] level is used; \
             write it as \"info\" or \"tether=debug,info\""
        );
    }
}

/// The config's filter; `config::load` has checked it already, so the
/// fallback only guards a caller that skipped the check.
fn config_filter(level: &str) -> Targets {
    parse_filter(level).unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
}

#[cfg(test)]
mod tests {
    use super::parse_filter;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn a_filter_takes_a_default_and_per_target_levels() {
        let f = parse_filter("tether=debug,sled=warn,info").unwrap();
        assert!(f.would_enable("tether::relay", &tracing::Level::DEBUG));
        assert!(!f.would_enable("sled::pagecache", &tracing::Level::INFO));
        assert!(f.would_enable("hyper", &tracing::Level::INFO));
        assert!(!f.would_enable("hyper", &tracing::Level::DEBUG));
        assert_eq!(
            parse_filter("warn").unwrap().default_level(),
            Some(LevelFilter::WARN)
        );
    }

    #[test]
    fn a_bad_filter_is_refused() {
        assert!(parse_filter("tether=loud").is_err());
    }
}
