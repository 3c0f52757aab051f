//! `tether-demo demo` (`cargo run -- demo`): the whole system on one
//! machine, in one process, with nothing to configure or install, walked
//! through step by step.
//!
//! | file | owns |
//! |---|---|
//! | `lib.rs` | [`run`], signals |
//! | `args.rs` | [`DemoArgs`], the addresses its ports give |
//! | `error.rs` | [`DemoError`] |
//! | [`stack`] | starting every part, tether from a generated TOML |
//! | [`walk`] | the steps, their output and the summary |
//! | `walk_mcu.rs` | the MCU steps: updates, `setAttribute`, the outage |
//! | `steps.rs` | what the steps share: waits, timings, "settled" |
//! | [`admin`] | tether's admin API as the steps read it |
//!
//! The simulators, also used by the integration tests (one of each):
//!
//! | file | simulates |
//! |---|---|
//! | [`broker`] | rumqttd in-process (the plain-broker topic scheme) |
//! | [`proxy`] | the TCP link cutter between tether and the broker: cuts, outages, half-open links, latency, resets |
//! | [`eclypse`] | the ECLYPSE controller's REST API, plain or TLS |
//! | [`http`] | the small recording HTTP/1.1 server under it |
//! | [`mcu`] | an afLib4 MCU on a pty |
//! | [`observer`] | the cloud's side of the broker: calls, answers, telemetry |
//!
//! A crate of its own, so the device daemon (`tether`) carries none of it:
//! no broker, no simulators, no cloud side.
#![forbid(unsafe_code)]

pub mod admin;
mod args;
pub mod broker;
pub mod eclypse;
mod error;
pub mod http;
pub mod mcu;
pub mod observer;
pub mod proxy;
pub mod stack;
mod steps;
pub mod walk;
mod walk_mcu;

pub use args::DemoArgs;
pub use error::DemoError;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use stack::Stack;
use tether::config::LogFormat;

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: i32 = 130;

/// SIGINT and SIGTERM, either of which stops the demo.
struct Interrupts(Signal, Signal);

impl Interrupts {
    fn install() -> std::io::Result<Self> {
        Ok(Self(
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.0.recv() => {}
            _ = self.1.recv() => {}
        }
    }
}

/// Runs the demo; returns the process exit code: 0 when every step
/// worked (and, with `--keep`, after the Ctrl-C that ends it), 1 when one
/// failed, 130 when Ctrl-C interrupted the walkthrough.
pub fn run(args: DemoArgs) -> i32 {
    // tether's INFO lines would bury the walkthrough; rumqttd's own logs
    // are the broker's business, not the demo's.
    let level = if args.verbose {
        "info,rumqttd=warn"
    } else {
        "warn,rumqttd=off"
    };
    tether::logging::init(level, LogFormat::Text);
    tether::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether demo: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> i32 {
    let mut interrupts = match Interrupts::install() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("tether demo: cannot install signal handlers: {e}");
            return 1;
        }
    };
    let stop = CancellationToken::new();
    // Dropping a half-started stack cancels nothing by itself, so cancel.
    let _stop_on_return = stop.clone().drop_guard();
    println!("tether demo: starting a broker, a controller, an MCU, the cloud side and tether on 127.0.0.1");
    let started = tokio::select! {
        s = Stack::start(&args, stop.clone()) => s,
        () = interrupts.next() => return EXIT_INTERRUPTED,
    };
    let mut stack = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tether demo: could not start: {e}");
            return 1;
        }
    };
    let outcome = tokio::select! {
        r = walk::run(&mut stack) => Some(r),
        () = interrupts.next() => None,
    };
    let code = match outcome {
        Some(Ok(report)) => {
            report.print();
            if report.passed() {
                0
            } else {
                1
            }
        }
        Some(Err(e)) => {
            eprintln!("tether demo: {e}");
            1
        }
        None => {
            println!("\ninterrupted: stopping everything");
            return finish(stack, &mut interrupts, EXIT_INTERRUPTED).await;
        }
    };
    if args.keep && code == 0 {
        walk::print_hints(&stack);
        interrupts.next().await;
        println!("\nstopping everything");
    }
    finish(stack, &mut interrupts, code).await
}

/// Orderly shutdown; a second Ctrl-C skips it.
async fn finish(stack: Stack, interrupts: &mut Interrupts, code: i32) -> i32 {
    tokio::select! {
        () = stack.shutdown() => code,
        () = interrupts.next() => EXIT_INTERRUPTED,
    }
}
