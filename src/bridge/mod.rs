//! The daemon side of the afLib4 bridge: tether plays the Afero radio (ASR)
//! for an MCU on a serial line, using `firmware_bridge`'s sans-IO core.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | `spawn`, [`BridgeHandle`], settings and errors |
//! | `api` | `setAttribute` / `getAttribute` methods, C2D, desired properties, status mapping |
//! | `runner.rs` | the supervisor: open the device, reopen with backoff, recover |
//! | `session.rs` | one open device: driver events, cloud commands, answer deadlines |
//! | `recovery` | link-loss kinds, reset pulse decision |
//! | `health` | link state, `/healthz` check and `/metrics` counters |
//! | `upstream` | [`Upstream`] (the outbox), forwarding filter, reported properties |
//! | `port.rs` | tokio-serial, tokio's clock, gpio-cdev lines |
//! | `tests` | against the demo's simulated MCU over a real pty, and through Mosquitto |
//!
//! Wiring: `spawn` first (it needs no hub), then `register` on the
//! hub's `Router`, start the hub, then `BridgeHandle::attach_hub` so the
//! last known values go to reported properties.

pub(crate) mod api;
pub(crate) mod health;
pub(crate) mod recovery;
pub(crate) mod upstream;

mod port;
mod runner;
mod session;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use embedded_hal::digital::OutputPin;
use firmware_bridge::{Config, Module, Profile, ProfileError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::BridgeConfig;
use crate::hub::HubHandle;
use crate::service::Beat;

pub(crate) use api::{register, Reply};
pub(crate) use health::BridgeStats;
pub(crate) use port::GpioError;
pub(crate) use upstream::Forward;
pub(crate) use upstream::{AttributeChange, Upstream};

use api::{Command, Origin};
use upstream::Reporter;

/// Cloud commands waiting for the bridge task. Direct methods are capped
/// by the hub's own call limit, so this only has to absorb bursts.
const COMMAND_QUEUE: usize = 64;
/// Grace over `bridge.timeout` before a caller gives up on a bridge task
/// that died; the task itself answers 504 at `bridge.timeout`.
const CALLER_GRACE: Duration = Duration::from_secs(2);

/// The bridge could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BridgeError {
    /// `bridge.profile` is not set: without it no MCU attribute is known
    /// and afLib's every UPDATE would be refused.
    #[error("bridge.profile is required: the device description names the MCU's attributes")]
    NoProfile,
    /// The profile file cannot be read.
    #[error("bridge.profile {path}: {source}")]
    ReadProfile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The profile is not a valid device description.
    #[error("bridge.profile {path}: {source}")]
    Profile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ProfileError,
    },
    /// The MCU reset line cannot be requested.
    #[error("bridge.mcu_reset_line: {0}")]
    Gpio(#[from] GpioError),
}

/// Timings that tests shorten; [`Tuning::default`] is for real devices.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    /// Ceiling of the first reopen delay (jittered between half of it and
    /// all of it); doubles up to `reopen_cap`.
    pub reopen_base: Duration,
    /// Longest delay between reopen attempts.
    pub reopen_cap: Duration,
    /// MCU silence after which the module probes it with a GET.
    pub probe_interval: Option<Duration>,
    /// This many corrupt sync frames within `storm_window` count as a
    /// broken link (noise, wrong baud rate), which reopens the device.
    pub storm_errors: usize,
    /// See `storm_errors`.
    pub storm_window: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            reopen_base: Duration::from_millis(250),
            reopen_cap: Duration::from_secs(10),
            probe_interval: Some(Duration::from_secs(30)),
            storm_errors: 20,
            storm_window: Duration::from_secs(10),
        }
    }
}

struct Shared {
    stats: Arc<BridgeStats>,
    reporter: Arc<Reporter>,
    timeout: Duration,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The bridge's face for the rest of tether. Cheap to clone.
#[derive(Clone)]
pub(crate) struct BridgeHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// Starts the bridge with the MCU reset line from the configuration.
///
/// # Errors
/// [`BridgeError`] for a missing or invalid profile or an unusable reset line.
pub(crate) fn spawn(
    cfg: &BridgeConfig,
    upstream: Arc<dyn Upstream>,
    hub: Option<HubHandle>,
    beat: Beat,
    shutdown: CancellationToken,
) -> Result<BridgeHandle, BridgeError> {
    let pin = cfg
        .mcu_reset_line
        .as_ref()
        .map(port::mcu_reset_pin)
        .transpose()?;
    spawn_with(cfg, Tuning::default(), pin, upstream, hub, beat, shutdown)
}

/// `spawn` with explicit timings and any reset pin (tests pass
/// embedded-hal-mock's).
///
/// # Errors
/// [`BridgeError`] for a missing or invalid profile.
pub(crate) fn spawn_with<P: OutputPin + Send + 'static>(
    cfg: &BridgeConfig,
    tuning: Tuning,
    mcu_reset: Option<P>,
    upstream: Arc<dyn Upstream>,
    hub: Option<HubHandle>,
    beat: Beat,
    shutdown: CancellationToken,
) -> Result<BridgeHandle, BridgeError> {
    let module = load_module(cfg, &tuning)?;
    let stats = Arc::new(BridgeStats::new(cfg.device.display().to_string()));
    let reporter = Arc::new(Reporter::default());
    if let Some(hub) = hub {
        reporter.attach(hub);
    }
    let (queue, forwarder) = upstream::spawn_forwarder(upstream, stats.clone(), shutdown.clone());
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let runner = runner::Runner::new(
        cfg,
        tuning,
        mcu_reset,
        rx,
        runner::Outputs {
            forward: Forward::new(&cfg.forward),
            upstream: queue,
            reporter: reporter.clone(),
            stats: stats.clone(),
        },
        beat,
        shutdown.clone(),
    );
    let tasks = vec![
        tokio::spawn(runner.run(module)),
        forwarder,
        tokio::spawn(reporter.clone().run(shutdown)),
    ];
    Ok(BridgeHandle {
        tx,
        shared: Arc::new(Shared {
            stats,
            reporter,
            timeout: cfg.timeout,
            tasks: Mutex::new(tasks),
        }),
    })
}

/// The profile's table plus the module values announced at boot.
fn load_module(cfg: &BridgeConfig, tuning: &Tuning) -> Result<Module, BridgeError> {
    let path = cfg.profile.clone().ok_or(BridgeError::NoProfile)?;
    let text = std::fs::read_to_string(&path).map_err(|source| BridgeError::ReadProfile {
        path: path.clone(),
        source,
    })?;
    let profile =
        Profile::from_json(&text).map_err(|source| BridgeError::Profile { path, source })?;
    let mut table = profile.to_table();
    // afBlink prints 65019 by reading 9 bytes whatever its length (spec §7).
    table.set_value(65019, b"0,0,tether".to_vec());
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let config = Config {
        probe_interval_ms: tuning.probe_interval.map(ms),
        // The cloud gets 504 at bridge.timeout; an answer after that is
        // reported as an ordinary MCU update.
        set_timeout_ms: ms(cfg.timeout),
        get_timeout_ms: ms(cfg.timeout),
        ..Config::default()
    };
    Ok(Module::new(config, table))
}

impl BridgeHandle {
    /// Gives the bridge the hub session for reported properties; values
    /// seen before are sent then.
    pub(crate) fn attach_hub(&self, hub: HubHandle) {
        self.shared.reporter.attach(hub);
    }

    /// Link state and counters: a `HealthCheck` and `RenderMetrics` source.
    pub(crate) fn stats(&self) -> Arc<BridgeStats> {
        self.shared.stats.clone()
    }

    /// Waits until the bridge's tasks have ended (after shutdown).
    pub(crate) async fn join(&self) {
        let tasks = std::mem::take(
            &mut *self
                .shared
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in tasks {
            if let Err(e) = t.await {
                warn!(error = %e, "a bridge task ended abnormally");
            }
        }
    }

    /// `setAttribute` as a direct method: the JSON body in, the answer out.
    pub(crate) async fn set_attribute(&self, body: &[u8]) -> Reply {
        let (attr_id, value) = match api::parse_set(body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        self.call(|reply| Command::Set {
            attr_id,
            value,
            origin: Origin::Method,
            reply: Some(reply),
        })
        .await
    }

    /// `getAttribute` as a direct method.
    pub(crate) async fn get_attribute(&self, body: &[u8]) -> Reply {
        let attr_id = match api::parse_get(body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        self.call(|reply| Command::Get { attr_id, reply }).await
    }

    /// A `setAttribute` C2D message: accepted once queued for the bridge;
    /// the MCU's answer is logged, since C2D has no response channel.
    ///
    /// # Errors
    /// The reason a message was not taken (logged by the hub).
    pub(crate) async fn set_attribute_c2d(&self, body: &[u8]) -> Result<(), String> {
        let (attr_id, value) = api::parse_set(body).map_err(|r| r.body.to_string())?;
        let cmd = Command::Set {
            attr_id,
            value,
            origin: Origin::C2d,
            reply: None,
        };
        self.tx
            .send(cmd)
            .await
            .map_err(|_| "the bridge has stopped".to_string())
    }

    /// Applies `attributes` of a desired-properties document. The hub
    /// calls this synchronously, so a full command queue drops the entry
    /// with a warning instead of blocking the hub.
    pub(crate) fn apply_desired(&self, doc: &serde_json::Value) {
        for (attr_id, value) in api::parse_desired(doc) {
            let cmd = Command::Set {
                attr_id,
                value,
                origin: Origin::Desired,
                reply: None,
            };
            if let Err(e) = self.tx.try_send(cmd) {
                warn!(attribute = attr_id, error = %e, "desired attribute not applied");
            }
        }
    }

    async fn call(&self, make: impl FnOnce(oneshot::Sender<Reply>) -> Command) -> Reply {
        let (reply, answer) = oneshot::channel();
        let stopped = || Reply::error(503, None, "unavailable", "the bridge has stopped");
        if self.tx.send(make(reply)).await.is_err() {
            return stopped();
        }
        match tokio::time::timeout(self.shared.timeout + CALLER_GRACE, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => stopped(),
            Err(_) => Reply::error(504, None, "timeout", "the bridge did not answer in time"),
        }
    }
}
