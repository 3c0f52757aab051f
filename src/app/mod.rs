//! The composition root: loads the config, starts every component with its
//! own settings, runs until a stop signal, and shuts down within a bound.
//!
//! Start order: outbox (local state), relay and bridge (their handlers must
//! be on the router before the hub connects), hub session, admin API, the
//! delivery tasks; then READY=1. Shutdown stops them in reverse, the outbox
//! last so its final sync sees every accepted message.

mod admin_api;
mod components;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tether_outbox::salvage::Salvager;
use tether_outbox::Outbox;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::bridge::BridgeHandle;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{self, AdminListen, Config};
use crate::hub::{self, HubHandle, Router};
use crate::service::exit::{EXIT_CONFIG, EXIT_FAILURE};
use crate::service::{notify, signals::Signal, signals::Signals, Liveness};
use crate::{logging, tls};

/// How long shutdown may take before tasks are abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How much more start-up time systemd is given each time a long step
/// before READY (an outbox store migration) reports progress.
const START_EXTEND_BY: Duration = Duration::from_secs(30);

/// Runs the daemon with the config at `path`; returns the exit code.
pub fn run(path: &Path) -> i32 {
    let cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("tether: invalid configuration: {e}");
            return EXIT_CONFIG;
        }
    };
    logging::init(&cfg.log.level, cfg.log.format);
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return EXIT_FAILURE;
        }
    };
    runtime.block_on(Daemon::new(path.to_path_buf(), Arc::new(SystemClock)).run(cfg))
}

/// Why start-up failed, with the exit code that says so to systemd.
struct StartError {
    code: i32,
    message: String,
}

impl StartError {
    fn config(message: impl std::fmt::Display) -> Self {
        Self {
            code: EXIT_CONFIG,
            message: message.to_string(),
        }
    }

    fn failure(message: impl std::fmt::Display) -> Self {
        Self {
            code: EXIT_FAILURE,
            message: message.to_string(),
        }
    }
}

/// What runs between READY=1 and the stop signal.
struct Running {
    hub: HubHandle,
    /// Stopped in this order; the outbox's tasks come last.
    tasks: Vec<JoinHandle<()>>,
    bridge: Option<BridgeHandle>,
}

/// The running daemon.
pub struct Daemon {
    path: PathBuf,
    clock: SharedClock,
    shutdown: CancellationToken,
    liveness: Liveness,
    admin_at: watch::Sender<Option<AdminListen>>,
}

impl Daemon {
    /// A daemon reading its config from `path` (for reloads).
    pub fn new(path: PathBuf, clock: SharedClock) -> Self {
        Self {
            path,
            clock,
            shutdown: CancellationToken::new(),
            liveness: Liveness::new(),
            admin_at: watch::Sender::new(None),
        }
    }

    /// Where the admin API listens once it is bound, `None` before (and
    /// always without `[admin] listen`). With `listen = "127.0.0.1:0"` the
    /// system picks a free port and this names it, so a program hosting the
    /// daemon (the demo, a supervisor) need not choose a port that may be
    /// taken by the time the daemon binds it. Take it before `run_until`;
    /// the log line "admin API listening" says the same.
    pub fn admin_listening(&self) -> watch::Receiver<Option<AdminListen>> {
        self.admin_at.subscribe()
    }

    /// Starts everything and runs until SIGTERM/SIGINT.
    pub async fn run(self, cfg: Config) -> i32 {
        tls::install_crypto_provider();
        let mut signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot install signal handlers");
                return EXIT_FAILURE;
            }
        };
        let running = match self.start(&cfg).await {
            Ok(r) => r,
            Err(e) => {
                error!("{}", e.message);
                self.shutdown.cancel();
                return e.code;
            }
        };
        notify::ready();
        info!(
            version = env!("CARGO_PKG_VERSION"),
            device = cfg.hub.endpoint.device_id(),
            "tether started"
        );
        loop {
            match signals.next().await {
                Signal::Stop => break,
                Signal::Reload => self.reload(&running.hub),
            }
        }
        self.stop(running).await;
        0
    }

    /// Starts everything and runs until `stop` is cancelled, leaving signal
    /// handling to the caller: for hosting the daemon inside another
    /// program (the demo, `tether-demo`). Returns the exit code `run` would.
    pub async fn run_until(self, cfg: Config, stop: CancellationToken) -> i32 {
        tls::install_crypto_provider();
        let running = match self.start(&cfg).await {
            Ok(r) => r,
            Err(e) => {
                error!("{}", e.message);
                self.shutdown.cancel();
                return e.code;
            }
        };
        stop.cancelled().await;
        self.stop(running).await;
        0
    }

    async fn start(&self, cfg: &Config) -> Result<Running, StartError> {
        // With [hub.provisioning], a cached assignment names the hub and the
        // device id for every component; without one the session waits.
        let (hub_cfg, cached) = hub::provisioning::prepare(&cfg.hub, &cfg.store.path);
        let cfg = &Config {
            hub: hub_cfg,
            ..cfg.clone()
        };
        let webhooks: Vec<String> = cfg.webhooks.iter().map(|w| w.name.clone()).collect();
        let progress = || notify::extend_timeout(START_EXTEND_BY);
        let outbox = Outbox::open(&cfg.store, &webhooks, self.clock.clone(), &progress)
            .map_err(|e| StartError::failure(format!("cannot open the outbox: {e}")))?;
        let salvager = self.salvager(cfg, &outbox);
        let mut router = Router::new();
        let relay = components::relay(cfg, &self.clock)
            .map_err(|e| StartError::config(format!("invalid relay settings: {e}")))?;
        components::register_relay(&mut router, &relay);
        let bridge = match &cfg.bridge {
            Some(b) => {
                let upstream = components::outbox_upstream(cfg, &outbox, &self.clock);
                let beat = self.liveness.register("bridge", Duration::from_secs(60));
                let handle =
                    crate::bridge::spawn(b, upstream, None, beat, self.shutdown.child_token())
                        .map_err(|e| StartError::config(format!("bridge: {e}")))?;
                crate::bridge::register(&mut router, &handle);
                Some(handle)
            }
            None => None,
        };
        let reported = components::reported_properties(&router, &self.clock);
        let beat = self
            .liveness
            .register("hub session", Duration::from_secs(300));
        let hub = hub::start(
            &cfg.hub,
            router,
            self.clock.clone(),
            reported,
            beat,
            self.shutdown.child_token(),
        )
        .map_err(|e| StartError::config(format!("invalid hub settings: {e}")))?;
        if let Some(b) = &bridge {
            b.attach_hub(hub.handle.clone());
        }
        let mut tasks = vec![hub.task];
        let provisioning = cfg.hub.provisioning.as_ref().map(|p| {
            let (task, health) = hub::provisioning::spawn(
                &cfg.hub,
                p,
                &cfg.store.path,
                cached,
                hub.handle.clone(),
                self.clock.clone(),
                self.shutdown.child_token(),
            );
            tasks.push(task);
            Arc::new(health)
        });
        let parts = admin_api::Parts {
            hub: &hub.handle,
            outbox: &outbox,
            relay: &relay,
            bridge: bridge.as_ref(),
            salvager: &salvager,
            provisioning,
            listening: &self.admin_at,
        };
        if let Some(t) = admin_api::start(cfg, parts, &self.clock, self.shutdown.clone())
            .await
            .map_err(StartError::failure)?
        {
            tasks.push(t);
        }
        tasks.push(tokio::spawn(notify::run(
            self.liveness.clone(),
            hub.handle.watch_status(),
            self.shutdown.clone(),
        )));
        tasks.push(components::schedules(
            cfg,
            relay,
            &outbox,
            self.shutdown.child_token(),
        ));
        tasks.extend(
            components::outbox_tasks(
                cfg,
                &outbox,
                hub.handle.clone(),
                hub.deliveries,
                &self.liveness,
                &self.shutdown,
            )
            .map_err(StartError::config)?,
        );
        Ok(Running {
            hub: hub.handle,
            tasks,
            bridge,
        })
    }

    /// The salvager (reading stores with this program), already salvaging
    /// set-aside stores in the background: intake and READY never wait.
    fn salvager(&self, cfg: &Config, outbox: &Outbox) -> Arc<Salvager> {
        // Where the path cannot be told, the kernel's link still runs it.
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let salvager = Arc::new(Salvager::new(
            outbox,
            cfg.store.path.clone(),
            exe,
            self.clock.clone(),
            self.shutdown.child_token(),
        ));
        if let Err(e) = salvager.clone().spawn_pending() {
            error!(error = %e, "cannot start salvaging set-aside outbox stores; they are kept");
        }
        salvager
    }

    async fn stop(&self, running: Running) {
        info!("stopping");
        notify::stopping();
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(SHUTDOWN_GRACE, async {
            if let Some(b) = &running.bridge {
                b.join().await;
            }
            for t in running.tasks {
                let _ = t.await;
            }
        })
        .await;
        if stopped.is_err() {
            warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
        }
        info!("stopped");
    }

    /// SIGHUP: validate the file first; an invalid one keeps the running
    /// config. Changed hub credentials reconnect.
    fn reload(&self, hub: &HubHandle) {
        notify::reloading(false);
        info!(path = %self.path.display(), "reloading the configuration");
        match config::load(&self.path) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    warn!("{w}");
                }
                let (hub_cfg, _) = hub::provisioning::prepare(&cfg.hub, &cfg.store.path);
                let unassigned = matches!(
                    &hub_cfg.endpoint,
                    config::HubEndpoint::Azure(a) if !a.is_assigned()
                );
                if unassigned {
                    info!("the hub settings apply once DPS has assigned the hub (or at restart)");
                    notify::reloading(true);
                    return;
                }
                match hub.reconfigure(&hub_cfg) {
                    Ok(()) => info!("configuration reloaded"),
                    Err(e) => error!("configuration not applied: {e}"),
                }
            }
            Err(e) => error!("the new configuration is invalid, keeping the running one: {e}"),
        }
        notify::reloading(true);
    }
}
