//! Starting every part of the demo in this process, in dependency order:
//! broker, cloud side (API, caller, observer), link cutter, controller,
//! MCU, then tether itself from a TOML file like a device's.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::admin::Admin;
use super::args::DemoArgs;
use super::eclypse::{self, Eclypse};
use super::error::DemoError;
use super::mcu::{Mcu, McuEvent};
use super::observer::Observer;
use super::proxy::Proxy;
use tether::app::Daemon;
use tether::clock::SystemClock;
use tether::config::AdminListen;
use tether_cloud::{self as cloud, BrokerConfig, DeviceAuth, ServeConfig, ServeHandle};
use tether_protocol::topics::cloud as topics;

/// The device id tether uses in the demo.
pub const DEVICE: &str = "demo-device";
/// The afBlink profile of Afero's Plumo-2D UART example: attribute 1
/// (Blink, BOOLEAN R/W), the LED 1024 and the button 1030.
const PROFILE: &str =
    include_str!("../../firmware-bridge/tests/data/profiles/afBlink_Plumo-2D_UART.json");
/// How long start-up may take before the demo gives up.
const START_WAIT: Duration = Duration::from_secs(20);

/// A private temporary directory, removed on drop.
pub struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> std::io::Result<WorkDir> {
        let name = format!("tether-demo-{}", uuid::Uuid::new_v4().simple());
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(WorkDir(path))
    }

    /// Writes `name` in it, readable by the owner only (tether warns about
    /// secret files others can read).
    fn write(&self, name: &str, text: &str) -> std::io::Result<PathBuf> {
        let path = self.0.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(text.as_bytes())?;
        Ok(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything the walkthrough drives.
pub struct Stack {
    /// The broker's own address (the cloud side connects here).
    pub broker: SocketAddr,
    /// Between tether and the broker.
    pub proxy: Proxy,
    /// The simulated controller.
    pub eclypse: Eclypse,
    /// The simulated MCU.
    pub mcu: Mcu,
    /// `tether-cloud serve`.
    pub cloud: ServeHandle,
    /// Direct-method caller, as `tether-cloud invoke` uses.
    pub caller: cloud::Broker,
    /// Telemetry as the cloud receives it.
    pub observer: Observer,
    /// tether's admin API.
    pub admin: Admin,
    /// The tether configuration file.
    pub config: PathBuf,
    /// For the demo's own HTTP calls.
    pub http: reqwest::Client,
    daemon: JoinHandle<i32>,
    /// tether's own stop, cancelled first so it leaves cleanly while the
    /// broker and the link are still there.
    daemon_stop: CancellationToken,
    stop: CancellationToken,
    dir: WorkDir,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Stack {
    /// Starts everything and waits until tether is online and the MCU has
    /// booted.
    ///
    /// # Errors
    /// Whichever part failed to start, or a start-up that took too long.
    pub async fn start(args: &DemoArgs, stop: CancellationToken) -> Result<Stack, DemoError> {
        let dir = WorkDir::create().map_err(|e| DemoError::io("temporary directory", e))?;
        let broker = super::broker::start(loopback(args.broker_port)).await?;

        let mut mqtt = BrokerConfig::new(format!("mqtt://{broker}"));
        mqtt.allow_insecure = true;
        let mut serve =
            ServeConfig::new(loopback(args.api_port), mqtt.clone(), dir.0.join("blobs"));
        serve.auth.anonymous = true;
        serve.device_auth = DeviceAuth::None;
        let cloud = cloud::serve(serve, stop.child_token())
            .await
            .map_err(|e| DemoError::Cloud(e.to_string()))?;
        let caller = cloud::Broker::start(&mqtt, 16, stop.child_token())
            .map_err(|e| DemoError::Cloud(e.to_string()))?;
        let events = topics::telemetry_filter(DEVICE);
        let observer = Observer::connect(broker, &[&events], stop.child_token())
            .await
            .map_err(|e| DemoError::Observer(e.to_string()))?;

        let proxy = Proxy::start(loopback(0), broker, stop.child_token())
            .await
            .map_err(|e| DemoError::io("link proxy", e))?;
        let password = uuid::Uuid::new_v4().simple().to_string();
        let eclypse = Eclypse::start(
            loopback(args.controller_port),
            &password,
            stop.child_token(),
        )
        .await
        .map_err(|e| DemoError::io("simulated controller", e))?;
        let mcu = Mcu::start(&[(1, vec![0])]).map_err(|e| DemoError::Mcu(e.to_string()))?;

        let admin_token = uuid::Uuid::new_v4().simple().to_string();
        let write =
            |name: &str, text: &str| dir.write(name, text).map_err(|e| DemoError::io(name, e));
        write("controller-password", &password)?;
        write("admin-token", &admin_token)?;
        write("afBlink.json", PROFILE)?;
        // Port 0: tether binds a free port and says which (no race with
        // another program taking a port picked beforehand).
        let toml = config_toml(&proxy, &eclypse, &cloud, &mcu, loopback(args.admin_port));
        let config = write("tether.toml", &toml)?;
        let cfg = tether::config::load(&config).map_err(|e| DemoError::Config(e.to_string()))?;
        for w in &cfg.warnings {
            tracing::warn!("{w}");
        }
        let daemon = Daemon::new(config.clone(), Arc::new(SystemClock));
        let listening = daemon.admin_listening();
        let daemon_stop = stop.child_token();
        let daemon = tokio::spawn(daemon.run_until(cfg, daemon_stop.clone()));
        let admin = admin_address(listening).await?;

        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| DemoError::Http(e.to_string()))?;
        let mut stack = Stack {
            broker,
            proxy,
            eclypse,
            mcu,
            cloud,
            caller,
            observer,
            admin: Admin::new(admin, admin_token, http.clone()),
            config,
            http,
            daemon,
            daemon_stop,
            stop,
            dir,
        };
        stack.ready().await?;
        Ok(stack)
    }

    /// Waits until both ends agree afLib's boot is done (the MCU saw it
    /// complete, the bridge reports the link up) and tether's presence on
    /// the broker says online.
    async fn ready(&mut self) -> Result<(), DemoError> {
        let deadline = Instant::now() + START_WAIT;
        let booted = self
            .mcu
            .wait(START_WAIT, |e| matches!(e, McuEvent::Booted(_)))
            .await;
        if booted.is_none() {
            return Err(DemoError::Timeout("the MCU to boot through the bridge"));
        }
        while !self.admin.mcu_link_up().await.unwrap_or(false)
            || self.cloud.device_online(DEVICE) != Some(true)
        {
            if self.daemon.is_finished() {
                return Err(DemoError::Tether(
                    "tether stopped during start-up (see its log above)".into(),
                ));
            }
            if Instant::now() > deadline {
                return Err(DemoError::Timeout(
                    "tether to come online with the MCU link up",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The temporary directory holding the config, secrets and outbox.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops everything the demo started and removes its files.
    pub async fn shutdown(self) {
        self.daemon_stop.cancel();
        // tether bounds its own shutdown at 10 s.
        let _ = tokio::time::timeout(Duration::from_secs(12), self.daemon).await;
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.cloud.stopped()).await;
        drop(self.dir);
    }
}

/// Where tether's admin API listens, once it is bound; an error when the
/// daemon stops first (its log says why) or takes longer than a start.
async fn admin_address(
    mut listening: tokio::sync::watch::Receiver<Option<AdminListen>>,
) -> Result<SocketAddr, DemoError> {
    let bound = tokio::time::timeout(START_WAIT, listening.wait_for(Option::is_some))
        .await
        .map_err(|_| DemoError::Timeout("tether's admin API to listen"))?
        .map_err(|_| DemoError::Tether("stopped before its admin API listened".into()))?
        .clone();
    match bound {
        Some(AdminListen::Tcp(addr)) => Ok(addr),
        other => Err(DemoError::Unexpected(format!(
            "tether's admin API is not on TCP: {other:?}"
        ))),
    }
}

/// tether's configuration: a device's, pointed at the simulations.
fn config_toml(
    proxy: &Proxy,
    eclypse: &Eclypse,
    cloud: &ServeHandle,
    mcu: &Mcu,
    admin: SocketAddr,
) -> String {
    format!(
        r#"# Written by `tether demo`; a device's file looks the same with real
# endpoints (see config/tether.example.toml).
[hub]
url = "mqtt://{proxy}"
allow_insecure = true
device_id = "{DEVICE}"
keep_alive = "10s"
connect_timeout = "5s"

[controller]
base_url = "{controller}"
username = "{user}"
password_file = "controller-password"

[relay]
allowed_paths = ["/api/rest/v1"]
upload_url = "{upload}"

[store]
path = "outbox"

[bridge]
device = "{pty}"
profile = "afBlink.json"
timeout = "5s"

[admin]
listen = "{admin}"
token_file = "admin-token"
"#,
        proxy = proxy.addr(),
        controller = eclypse.base_url(),
        user = eclypse::USER,
        upload = cloud.public_url(),
        pty = mcu.path().display(),
    )
}
