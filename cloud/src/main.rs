//! The `tether-cloud` command line: `serve`, `invoke`, `request`.

use std::process::ExitCode;

use clap::Parser;

use tether_cloud::cli::{self, CloudCommand};

/// The cloud side of tether for plain MQTT brokers.
#[derive(Parser)]
#[command(name = "tether-cloud", version, about)]
struct Cli {
    #[command(subcommand)]
    command: CloudCommand,
}

fn main() -> ExitCode {
    let code = cli::run(Cli::parse().command);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
