//! Starting a hub session in the test process, and waiting on its status
//! (the in-crate counterpart of `tether_testkit::hub`, whose types are the
//! non-test build's).

use std::time::Duration;

use tether_testkit::Broker;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::hub::{self, Hub, HubStatus, Router};
use crate::service::Beat;

/// How long a test waits for the hub to reach a state.
pub(super) const WAIT: Duration = Duration::from_secs(10);

/// A plain-broker config for device `dev1` over the broker's TLS listener.
pub(super) fn plain_config(broker: &Broker, password: &str, ca_file: &std::path::Path) -> Config {
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
    crate::config::parse(&text, broker.dir()).expect("valid test config")
}

/// Starts a session for `cfg` with `router` and `clock`.
pub(super) fn start(cfg: &Config, router: Router, clock: SharedClock) -> (Hub, CancellationToken) {
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
pub(super) async fn wait_for(
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
pub(super) async fn connected(hub: &Hub) -> HubStatus {
    reached(hub, "connected", HubStatus::is_connected).await
}

/// Waits until the session is connected with every subscription in place
/// (all SUBACKs in): methods, desired properties and C2D messages arrive.
pub(super) async fn subscribed(hub: &Hub) -> HubStatus {
    reached(hub, "subscribed", HubStatus::is_subscribed).await
}

async fn reached(hub: &Hub, what: &str, f: impl Fn(&HubStatus) -> bool) -> HubStatus {
    wait_for(&mut hub.handle.watch_status(), what, f).await
}

/// Stops the session and waits for its task.
pub(super) async fn stop(hub: Hub, stop: CancellationToken) {
    stop.cancel();
    hub.task.await.expect("hub task ends cleanly");
}
