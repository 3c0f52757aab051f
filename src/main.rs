//! The `tether` command line: `run`, `check-config`, `sas-token`,
//! `failures`, `outbox`. The cloud side is the `tether-cloud` binary, the
//! demo `tether-demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};

use tether::app;
use tether::config::{self, connection_string::ConnectionAuth, ConnectionString};
use tether::outbox::cli as outbox_cli;
use tether::service::exit::EXIT_CONFIG;
use tether_outbox::HUB_SINK;
use tether_protocol::sas;
use tether_protocol::time::unix_seconds;

/// Edge gateway agent: tethers a controller to a cloud hub.
#[derive(Parser)]
#[command(name = "tether", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/tether/tether.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file without connecting anywhere.
    CheckConfig {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/tether/tether.toml")]
        config: PathBuf,
    },
    /// Print the SAS token tether would send, for debugging with other clients.
    SasToken {
        /// Azure IoT Hub device connection string with a SharedAccessKey.
        #[arg(long)]
        connection_string: String,
        /// Absolute expiry (Unix seconds).
        #[arg(long, conflicts_with = "ttl")]
        expiry: Option<u64>,
        /// Lifetime from now, e.g. `1h` or `30m` (default 1h).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Push failures (messages a sink never took), through the admin API.
    Failures {
        /// Configuration file (for the admin address and token).
        #[arg(short, long, default_value = "/etc/tether/tether.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: FailuresAction,
    },
    /// The durable outbox, through the admin API.
    Outbox {
        /// Configuration file (for the admin address and token).
        #[arg(short, long, default_value = "/etc/tether/tether.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: OutboxAction,
    },
}

#[derive(Subcommand)]
enum FailuresAction {
    /// List one partner's failures, oldest first (Afero's order).
    List {
        /// The partner: `hub` or a webhook's name.
        #[arg(long, default_value = HUB_SINK)]
        partner: String,
        /// Page size (default: the server's cap, 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// Only failures newer than this id (printed when more follow).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one failure with its full message.
    Show {
        /// Failure id (`partnerPushFailureId`).
        id: String,
        /// The partner the failure belongs to.
        #[arg(long, default_value = HUB_SINK)]
        partner: String,
    },
    /// Delete one failure.
    Delete {
        /// Failure id (`partnerPushFailureId`).
        id: String,
        /// The partner the failure belongs to.
        #[arg(long, default_value = HUB_SINK)]
        partner: String,
    },
    /// Send a failed message again (or all of them with --all).
    Replay {
        /// Failure id (`partnerPushFailureId`).
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Replay every failure.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// The partner (`hub` or a webhook name): the failure's with an id
        /// (default `hub`), or only this partner's with --all.
        #[arg(long)]
        partner: Option<String>,
    },
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Queue depth, ages and counters per sink.
    Stats,
    /// Import the messages and push failures of a set-aside or copied
    /// store directory into the running daemon's store (nothing twice).
    Import {
        /// The store directory (e.g. `<store.path>/outbox.corrupt-<seconds>`).
        dir: PathBuf,
    },
    /// Stream a store's records on stdout for salvage (used by the daemon).
    #[command(hide = true)]
    Export {
        /// The store directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { config } => app::run(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::SasToken {
            connection_string,
            expiry,
            ttl,
        } => sas_token(&connection_string, expiry, ttl.as_deref()),
        Command::Failures { config, action } => {
            let cmd = match action {
                FailuresAction::List {
                    partner,
                    limit,
                    after,
                } => outbox_cli::Command::List {
                    partner,
                    limit,
                    after,
                },
                FailuresAction::Show { id, partner } => outbox_cli::Command::Show { partner, id },
                FailuresAction::Delete { id, partner } => {
                    outbox_cli::Command::Delete { partner, id }
                }
                FailuresAction::Replay {
                    id: Some(id),
                    partner,
                    ..
                } => outbox_cli::Command::Replay {
                    partner: partner.unwrap_or_else(|| HUB_SINK.into()),
                    id,
                },
                FailuresAction::Replay {
                    id: None, partner, ..
                } => outbox_cli::Command::ReplayAll(partner),
            };
            outbox_cli::run(&config, &cmd)
        }
        Command::Outbox { config, action } => match action {
            OutboxAction::Stats => outbox_cli::run(&config, &outbox_cli::Command::Stats),
            OutboxAction::Import { dir } => outbox_cli::import(&config, &dir),
            OutboxAction::Export { dir } => tether_outbox::salvage::export::run(&dir),
        },
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn check_config(path: &std::path::Path) -> i32 {
    match config::load(path) {
        Ok(cfg) => {
            println!("{}: ok", path.display());
            println!("{}", config::summary::summary(&cfg));
            0
        }
        Err(e) => {
            // Read and syntax errors name the file themselves.
            match e {
                config::ConfigError::Io { .. } | config::ConfigError::Syntax { .. } => {
                    eprintln!("{e}")
                }
                _ => eprintln!("{}: {e}", path.display()),
            }
            EXIT_CONFIG
        }
    }
}

fn sas_token(conn: &str, expiry: Option<u64>, ttl: Option<&str>) -> i32 {
    let cs = match ConnectionString::parse(conn) {
        Ok(cs) => cs,
        Err(e) => {
            eprintln!("tether sas-token: --connection-string: {e}");
            return EXIT_CONFIG;
        }
    };
    let ConnectionAuth::SharedAccessKey(key) = &cs.auth else {
        eprintln!(
            "tether sas-token: the connection string has no SharedAccessKey, so there is no token to mint"
        );
        return EXIT_CONFIG;
    };
    let se = match (expiry, ttl) {
        (Some(se), _) => se,
        (None, ttl) => match humantime::parse_duration(ttl.unwrap_or("1h")) {
            Ok(d) => unix_seconds(SystemTime::now() + d.max(Duration::from_secs(1))),
            Err(e) => {
                eprintln!("tether sas-token: --ttl: {e} (use e.g. 1h, 30m)");
                return EXIT_CONFIG;
            }
        },
    };
    let uri = sas::resource_uri(&cs.host_name, &cs.device_id, cs.module_id.as_deref());
    println!("{}", sas::sign(&key.0, &uri, se).expose());
    0
}

/// Caps glibc's malloc at one arena unless the operator chose otherwise
/// (`MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` in the environment). glibc gives
/// each thread that allocates under contention an arena of its own, up to
/// eight per core, and keeps what is freed in each: tether's threads (the
/// runtime's workers, the outbox writer, sled's IO threads) hand messages
/// to each other, so under sustained load the arenas held 26-30 MiB of RSS
/// where one holds 21 (BENCHMARKS.md, "Issue 12's budgets"). Small allocations
/// still go through each thread's cache without the arena's lock. musl
/// (the aarch64 build) has no arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    // SAFETY: mallopt changes only the allocator's settings and is called
    // first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// C's `pow`, from the `libm` crate (a port of musl's, within 1 ulp). It is
/// the one C math function in the binary: tokio's scheduler calls it to
/// weigh task poll times. Defined here, it keeps glibc's libm out of the
/// process: the loader neither maps it nor runs its relocations, 0.5 MiB
/// less resident at idle (issue 12's idle budget).
/// `tests/it/cli.rs::the_daemon_runs_without_libm` fails when a new
/// dependency needs another math function from libm.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
