//! The composition root: loads the config, starts every component with its
//! own settings, runs until a stop signal, and shuts down within a bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::{self, metrics::BuildInfo, metrics::HubMetrics, Admin};
use crate::clock::{unix_seconds, SharedClock, SystemClock};
use crate::config::{self, AzureAuth, Config, HubEndpoint};
use crate::hub::{self, Router};
use crate::service::{notify, signals::Signal, signals::Signals, Liveness};
use crate::{certinfo, logging, tls};

/// Exit code for an invalid configuration (EX_USAGE): the unit's
/// `RestartPreventExitStatus=64` stops systemd from restart-looping.
pub const EXIT_CONFIG: i32 = 64;
/// Exit code for a runtime failure (systemd restarts the service).
pub const EXIT_FAILURE: i32 = 1;
/// How long shutdown may take before tasks are abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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

/// The running daemon.
pub struct Daemon {
    path: PathBuf,
    clock: SharedClock,
    shutdown: CancellationToken,
    liveness: Liveness,
}

impl Daemon {
    /// A daemon reading its config from `path` (for reloads).
    pub fn new(path: PathBuf, clock: SharedClock) -> Self {
        Self {
            path,
            clock,
            shutdown: CancellationToken::new(),
            liveness: Liveness::new(),
        }
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
        let router = Router::new();
        let reported = reported_properties(&router, &self.clock);
        let beat = self
            .liveness
            .register("hub session", Duration::from_secs(300));
        let hub = match hub::start(
            &cfg.hub,
            router,
            self.clock.clone(),
            reported,
            beat,
            self.shutdown.child_token(),
        ) {
            Ok(h) => h,
            Err(e) => {
                error!("invalid hub settings: {e}");
                return EXIT_CONFIG;
            }
        };
        let admin_task = match self.start_admin(&cfg, &hub.handle).await {
            Ok(t) => t,
            Err(e) => {
                error!("{e}");
                self.shutdown.cancel();
                return EXIT_FAILURE;
            }
        };
        let notifier = tokio::spawn(notify::run(
            self.liveness.clone(),
            hub.handle.watch_status(),
            self.shutdown.clone(),
        ));
        // The deliveries receiver is the outbox's; until it exists, drain it.
        let mut deliveries = hub.deliveries;
        tokio::spawn(async move { while deliveries.recv().await.is_some() {} });

        notify::ready();
        info!(
            version = env!("CARGO_PKG_VERSION"),
            device = cfg.hub.endpoint.device_id(),
            "tether started"
        );
        loop {
            match signals.next().await {
                Signal::Stop => break,
                Signal::Reload => self.reload(&hub.handle),
            }
        }
        info!("stopping");
        notify::stopping();
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(SHUTDOWN_GRACE, async {
            let _ = hub.task.await;
            if let Some(t) = admin_task {
                let _ = t.await;
            }
            let _ = notifier.await;
        })
        .await;
        if stopped.is_err() {
            warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
        }
        info!("stopped");
        0
    }

    async fn start_admin(
        &self,
        cfg: &Config,
        hub: &hub::HubHandle,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, admin::AdminError> {
        let Some(listen) = &cfg.admin.listen else {
            return Ok(None);
        };
        let bound = admin::bind(listen).await?;
        let state = Arc::new(Admin {
            hub: hub.watch_status(),
            metrics: vec![
                Arc::new(BuildInfo),
                HubMetrics::new(hub.watch_status(), client_cert_not_after(cfg)),
            ],
            checks: Vec::new(),
            token: cfg.admin.token.clone(),
        });
        let app = admin::app(state, axum::Router::new());
        Ok(Some(admin::serve(bound, app, self.shutdown.clone())))
    }

    /// SIGHUP: validate the file first; an invalid one keeps the running
    /// config. Changed hub credentials reconnect.
    fn reload(&self, hub: &hub::HubHandle) {
        notify::reloading(false);
        info!(path = %self.path.display(), "reloading the configuration");
        match config::load(&self.path) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    warn!("{w}");
                }
                match hub.reconfigure(&cfg.hub) {
                    Ok(()) => info!("configuration reloaded"),
                    Err(e) => error!("configuration not applied: {e}"),
                }
            }
            Err(e) => error!("the new configuration is invalid, keeping the running one: {e}"),
        }
        notify::reloading(true);
    }
}

fn client_cert_not_after(cfg: &Config) -> Option<u64> {
    let cert = match &cfg.hub.endpoint {
        HubEndpoint::Azure(a) => match &a.auth {
            AzureAuth::X509(c) => Some(c),
            _ => None,
        },
        HubEndpoint::Broker(b) => b.client_cert.as_ref(),
    }?;
    certinfo::pem_file_not_after(&cert.cert_file)
}

/// Reported properties: agent version, start time, capabilities.
fn reported_properties(router: &Router, clock: &SharedClock) -> Map<String, Value> {
    let doc = json!({
        "agent": { "name": "tether", "version": env!("CARGO_PKG_VERSION") },
        "startedAt": unix_seconds(clock.now()),
        "capabilities": { "methods": router.method_names() },
    });
    match doc {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
