//! Starting an in-process hub session for tests, and waiting on its status.

use std::time::Duration;

use tether::clock::SharedClock;
use tether::config::Config;
use tether::hub::{self, Hub, HubStatus, Router};
use tether::service::Beat;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Broker;

/// How long a test waits for the hub to reach a state.
pub const WAIT: Duration = Duration::from_secs(10);

/// A plain-broker config for device `dev1` over the broker's TLS listener.
pub fn plain_config(broker: &Broker, password: &str, ca_file: &std::path::Path) -> Config {
    let text = format!(
        r#"
        [hub]
        url = "mqtts://localhost:{port}"
        device_id = "dev1"
        username = "dev1"
        password = "{password}"
        ca_file = "{ca}"
        keep_alive = "5s"
        connect_timeout = "5s"
        "#,
        port = broker.tls_port(),
        ca = ca_file.display(),
    );
    tether::config::parse(&text, broker.dir()).expect("valid test config")
}

/// Starts a session for `cfg` with `router` and `clock`.
pub fn start(cfg: &Config, router: Router, clock: SharedClock) -> (Hub, CancellationToken) {
    let stop = CancellationToken::new();
    let hub = hub::start(
        &cfg.hub,
        router,
        clock,
        serde_json::Map::new(),
        Beat::detached(),
        stop.clone(),
    )
    .expect("hub starts");
    (hub, stop)
}

/// Waits until `f` holds, or panics naming `what` and the last status.
pub async fn wait_for(
    rx: &mut watch::Receiver<HubStatus>,
    what: &str,
    f: impl Fn(&HubStatus) -> bool,
) -> HubStatus {
    let got = tokio::time::timeout(WAIT, rx.wait_for(|s| f(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match got {
        Ok(Ok(s)) => s,
        _ => panic!("hub never reached: {what}; last status {:?}", rx.borrow()),
    }
}

/// Waits until the session is connected.
pub async fn connected(hub: &Hub) -> HubStatus {
    reached(hub, "connected", HubStatus::is_connected).await
}

/// Waits until the session is connected with every subscription in place
/// (all SUBACKs in): methods, desired properties and C2D messages arrive.
pub async fn subscribed(hub: &Hub) -> HubStatus {
    reached(hub, "subscribed", HubStatus::is_subscribed).await
}

async fn reached(hub: &Hub, what: &str, f: impl Fn(&HubStatus) -> bool) -> HubStatus {
    wait_for(&mut hub.handle.watch_status(), what, f).await
}

/// Stops the session and waits for its task.
pub async fn stop(hub: Hub, stop: CancellationToken) {
    stop.cancel();
    hub.task.await.expect("hub task ends cleanly");
}
