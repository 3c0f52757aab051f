//! The `tether-demo` command line: `demo`, the walkthrough. It is a
//! subcommand so that `cargo run -- demo` at the top of the workspace (whose
//! default member this crate is) reads as it always has.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tether_demo::DemoArgs;

/// tether's demo: the whole system on this machine, simulated.
#[derive(Parser)]
#[command(name = "tether-demo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on this machine in one process (broker, simulated
    /// controller and MCU, tether, the cloud side), walked through step by step.
    Demo(DemoArgs),
}

fn main() -> ExitCode {
    let Command::Demo(args) = Cli::parse().command;
    ExitCode::from(u8::try_from(tether_demo::run(args)).unwrap_or(1))
}
