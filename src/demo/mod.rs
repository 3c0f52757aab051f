//! `tether demo`: the whole system on one machine, in one process, with
//! nothing to configure or install, walked through step by step.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`DemoArgs`], [`run`], signals, [`DemoError`] |
//! | [`stack`] | starting every part, tether from a generated TOML |
//! | [`walk`] | the steps, their output and the summary |
//! | `walk_mcu.rs` | the MCU steps: updates, `setAttribute`, the outage |
//! | [`broker`] | rumqttd in-process (the plain-broker topic scheme) |
//! | [`proxy`] | the TCP link cutter between tether and the broker |
//! | [`eclypse`] | a simulated ECLYPSE REST API |
//! | [`mcu`] | a simulated afLib4 MCU on a pty |
//! | [`observer`] | the cloud's view of telemetry |
//!
//! Built only with the `demo` cargo feature (on by default); device
//! builds use `--no-default-features` and carry none of it.

pub mod broker;
pub mod eclypse;
pub mod mcu;
pub mod observer;
pub mod proxy;
pub mod stack;
pub mod walk;
mod walk_mcu;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::LogFormat;
use stack::Stack;

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: i32 = 130;

/// `tether demo` flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DemoArgs {
    /// Keep everything running after the walkthrough, until Ctrl-C, and
    /// print commands to try against it.
    #[arg(long)]
    pub keep: bool,
    /// Show tether's own logs at info level, interleaved with the walkthrough.
    #[arg(long)]
    pub verbose: bool,
    /// Only tether's warnings and errors (the default).
    #[arg(long, conflicts_with = "verbose")]
    pub quiet_logs: bool,
    /// Port of the Cloud Relay API (`tether cloud serve`); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub api_port: u16,
    /// Port of the MQTT broker; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub broker_port: u16,
    /// Port of tether's admin API; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub admin_port: u16,
    /// Port of the simulated controller; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub controller_port: u16,
}

/// Why the demo could not run or a step failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A local resource (file, port) failed.
    #[error("{what}: {source}")]
    Io {
        /// Which.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The embedded broker.
    #[error("MQTT broker: {0}")]
    Broker(String),
    /// `tether cloud serve` or the method caller.
    #[error("cloud side: {0}")]
    Cloud(String),
    /// The telemetry subscriber.
    #[error("cloud subscriber: {0}")]
    Observer(String),
    /// The simulated MCU.
    #[error("simulated MCU: {0}")]
    Mcu(String),
    /// The generated configuration was refused.
    #[error("tether configuration: {0}")]
    Config(String),
    /// tether itself.
    #[error("tether: {0}")]
    Tether(String),
    /// An HTTP call of the demo's own.
    #[error("HTTP: {0}")]
    Http(String),
    /// Something expected did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A step got an answer it should not have.
    #[error("{0}")]
    Unexpected(String),
}

impl DemoError {
    fn io(what: &str, source: std::io::Error) -> Self {
        Self::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// `addr` as given, or with port 0 a free loopback port, for parts that
/// need a concrete address before they bind (the broker, tether's admin
/// API). Another program could take it in between; on a demo machine
/// that is unlikely and reported clearly when it happens.
pub(crate) async fn free_addr(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    tokio::net::TcpListener::bind(addr).await?.local_addr()
}

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
    crate::logging::init(level, LogFormat::Text);
    crate::tls::install_crypto_provider();
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

/// Milliseconds, for the walkthrough's timings.
fn ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
