//! Azure DPS provisioning end to end against Mosquitto: a device with only
//! `[hub.provisioning]` registers with a DPS stand-in (`tether_testkit::dps`), gets
//! its hub, connects there, keeps the assignment across a restart and
//! registers again when the hub refuses it.
//!
//! One broker plays both services: its password file holds the DPS
//! identity (username `{idScope}/registrations/{id}/api-version=2019-03-31`,
//! SAS token with `skn=registration`) and the assigned hub identity, both
//! exact tokens under an injected clock, so a wrong key is refused at
//! CONNECT like the services refuse it. The stand-in answers on the plain
//! listener with the script each test gives it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tether_protocol::{dps, sas};
use tether_testkit::dps::{Dps, Reply, Request};
use tether_testkit::{Broker, BrokerOptions, ManualClock};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::support::{self, wait_for};
use crate::config::Config;
use crate::hub::credentials::azure_username;
use crate::hub::provisioning::status::{ProvisioningState, ProvisioningStatus};
use crate::hub::provisioning::{self, cache};
use crate::hub::{Failure, Hub, HubStatus, Router};

const T0: u64 = 1_900_000_000;
const SCOPE: &str = "0ne00TEST1";
const REGISTRATION: &str = "dev1";
/// base64 of "device-key-for-tests-0123456789!"
const KEY_B64: &str = "ZGV2aWNlLWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OSE=";
const KEY: &[u8] = b"device-key-for-tests-0123456789!";
/// base64 of "group-key-for-tests-0123456789!"
const GROUP_B64: &str = "Z3JvdXAta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg5IQ==";
/// HMAC-SHA256(group key, "dev1") computed with python3's `hmac`.
const DERIVED_B64: &str = "wrNnyS8UKoyGmMHrngWdTmigwzKY34zMkZ4fUs1ynxc=";
/// Long enough for a hub that refused credentials to come back (10 s floor).
const WAIT: Duration = Duration::from_secs(40);

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("test key is base64")
}

/// The DPS and hub identities of `dev1` with `key`, for the password file.
fn identities(key: &[u8]) -> BrokerOptions {
    let se = T0 + 3600;
    let dps_token = dps::sas_token(key, SCOPE, REGISTRATION, se);
    let hub_token = sas::sign(key, &sas::resource_uri("localhost", "dev1", None), se);
    BrokerOptions::new()
        .user(&dps::username(SCOPE, REGISTRATION), dps_token.expose())
        .user(&azure_username("localhost", "dev1"), hub_token.expose())
}

fn config(broker: &Broker, state: &Path, key_line: &str) -> Config {
    config_on(broker, broker.tls_port(), state, "", key_line)
}

/// The config for DPS and the hub on `port`, with `hub_extra` in `[hub]`.
fn config_on(broker: &Broker, port: u16, state: &Path, hub_extra: &str, key_line: &str) -> Config {
    let text = format!(
        r#"
        [hub]
        port = {port}
        ca_file = "{ca}"
        keep_alive = "5s"
        connect_timeout = "5s"
        {hub_extra}
        [hub.provisioning]
        id_scope = "{SCOPE}"
        registration_id = "{REGISTRATION}"
        global_endpoint = "localhost"
        port = {port}
        {key_line}
        [hub.provisioning.payload]
        site = "A"
        [store]
        path = "{state}"
        "#,
        ca = broker.ca_pem_path().display(),
        state = state.display(),
    );
    let mut cfg = crate::config::parse(&text, broker.dir()).expect("valid test config");
    let p = cfg.hub.provisioning.as_mut().expect("provisioning");
    p.retry_base = Duration::from_millis(100);
    p.retry_cap = Duration::from_millis(500);
    p.poll_interval = Duration::from_millis(200);
    p.response_timeout = Duration::from_secs(5);
    cfg
}

fn individual() -> String {
    format!("symmetric_key = \"{KEY_B64}\"")
}

/// The hub session and the provisioning task, started as the daemon starts them.
struct Device {
    hub: Hub,
    provisioning: watch::Receiver<ProvisioningStatus>,
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl Device {
    fn start(cfg: &Config, clock: &ManualClock) -> Device {
        let (hub_cfg, cached) = provisioning::prepare(&cfg.hub, &cfg.store.path);
        let cfg = Config {
            hub: hub_cfg,
            ..cfg.clone()
        };
        let (hub, stop) = support::start(&cfg, Router::new(), Arc::new(clock.clone()));
        let p = cfg.hub.provisioning.as_ref().expect("provisioning");
        let (task, health) = provisioning::spawn(
            &cfg.hub,
            p,
            &cfg.store.path,
            cached,
            hub.handle.clone(),
            Arc::new(clock.clone()),
            stop.child_token(),
        );
        Device {
            hub,
            provisioning: health.0,
            task,
            stop,
        }
    }

    async fn connected(&self) -> HubStatus {
        let mut rx = self.hub.handle.watch_status();
        let got = tokio::time::timeout(WAIT, rx.wait_for(HubStatus::is_connected))
            .await
            .map(|r| r.map(|s| s.clone()));
        match got {
            Ok(Ok(s)) => s,
            _ => panic!(
                "the hub never connected: {:?}; provisioning {:?}",
                rx.borrow(),
                self.provisioning.borrow()
            ),
        }
    }

    async fn provisioning_reached(
        &self,
        what: &str,
        f: impl Fn(&ProvisioningStatus) -> bool,
    ) -> ProvisioningStatus {
        let mut rx = self.provisioning.clone();
        let got = tokio::time::timeout(WAIT, rx.wait_for(|s| f(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match got {
            Ok(Ok(s)) => s,
            _ => panic!("provisioning never reached {what}: {:?}", rx.borrow()),
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.hub.task.await.expect("hub task ends");
        self.task.await.expect("provisioning task ends");
    }
}

/// Registers, is told to poll (202, retry-after 1 s), polls, is assigned.
fn register_then_poll(requests: &[Request]) -> Reply {
    match requests.last().map(|r| r.kind) {
        Some("register") => Reply::assigning("op-1", 1),
        _ => Reply::assigned("localhost", "dev1"),
    }
}

/// A device with an individual key registers (202, then a poll after the
/// retry-after), connects to the assigned hub as the assigned device and
/// caches the assignment; restarted, it connects without asking DPS.
#[tokio::test]
async fn an_individual_key_registers_polls_connects_and_a_restart_uses_the_cache() {
    let broker = Broker::start(identities(KEY));
    let state = tempfile::tempdir().unwrap();
    let dps = Dps::start(broker.plain_port(), Box::new(register_then_poll)).await;
    let clock = ManualClock::at_unix(T0);
    let cfg = config(&broker, state.path(), &individual());

    let device = Device::start(&cfg, &clock);
    device.connected().await;
    let requests = dps.requests();
    let kinds: Vec<_> = requests.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["register", "poll"]);
    assert_eq!(requests[0].body["registrationId"], "dev1");
    assert_eq!(requests[0].body["payload"]["site"], "A");
    assert_eq!(requests[1].operation_id.as_deref(), Some("op-1"));
    assert!(
        requests[1].at - requests[0].at >= Duration::from_secs(1),
        "the poll honours retry-after"
    );
    let s = device.provisioning.borrow().clone();
    assert_eq!(s.state, ProvisioningState::Assigned);
    assert_eq!(s.assigned_hub.as_deref(), Some("localhost"));
    let p = cfg.hub.provisioning.as_ref().unwrap();
    let cached = cache::read(state.path(), p).unwrap().expect("cached");
    assert_eq!(
        (cached.assigned_hub.as_str(), cached.device_id.as_str()),
        ("localhost", "dev1")
    );
    device.stop().await;

    let device = Device::start(&cfg, &clock);
    assert!(device.provisioning.borrow().from_cache);
    device.connected().await;
    assert_eq!(dps.requests().len(), 2, "a restart does not ask DPS again");
    device.stop().await;
}

/// With an enrollment group's key the device derives its own key: DPS
/// and the hub accept tokens signed with HMAC-SHA256(group key, "dev1").
#[tokio::test]
async fn a_group_key_registers_with_the_derived_device_key() {
    let broker = Broker::start(identities(&b64(DERIVED_B64)));
    let state = tempfile::tempdir().unwrap();
    let dps = Dps::start(broker.plain_port(), Box::new(register_then_poll)).await;
    let clock = ManualClock::at_unix(T0);
    let cfg = config(
        &broker,
        state.path(),
        &format!("group_key = \"{GROUP_B64}\""),
    );
    let device = Device::start(&cfg, &clock);
    device.connected().await;
    assert_eq!(dps.requests().len(), 2);
    device.stop().await;
}

/// A 429 with retry-after is shown, and the same request is repeated no
/// sooner than DPS asked.
#[tokio::test]
async fn throttling_is_shown_and_the_request_repeated_after_retry_after() {
    let broker = Broker::start(identities(KEY));
    let state = tempfile::tempdir().unwrap();
    let script = |requests: &[Request]| match requests.len() {
        1 => Reply::error(429, 429_001, "Too many requests", Some(1)),
        2 => Reply::assigning("op-1", 1),
        _ => Reply::assigned("localhost", "dev1"),
    };
    let dps = Dps::start(broker.plain_port(), Box::new(script)).await;
    let clock = ManualClock::at_unix(T0);
    let device = Device::start(&config(&broker, state.path(), &individual()), &clock);
    let s = device
        .provisioning_reached("the 429 shown", |s| {
            s.last_error.as_deref().is_some_and(|e| e.contains("429"))
        })
        .await;
    assert!(s.last_error.unwrap().contains("errorCode 429001"));
    device.connected().await;
    let requests = dps.requests();
    assert_eq!(requests[0].kind, "register");
    assert_eq!(requests[1].kind, "register");
    assert!(requests[1].at - requests[0].at >= Duration::from_secs(1));
    assert_eq!(device.provisioning.borrow().last_error, None);
    device.stop().await;
}

/// A failed assignment and a 401 are each shown with what DPS said, and
/// tether keeps registering until DPS assigns a hub.
#[tokio::test]
async fn failed_assignments_and_refusals_are_shown_and_retried() {
    let broker = Broker::start(identities(KEY));
    let state = tempfile::tempdir().unwrap();
    let script = |requests: &[Request]| {
        let registers = requests.iter().filter(|r| r.kind == "register").count();
        match (registers, requests.last().map(|r| r.kind)) {
            (1, Some("register")) => Reply::assigning("op-1", 1),
            (1, _) => Reply::failed(400_209, "no linked IoT hub"),
            (2, _) => Reply::error(401, 401_002, "Unauthorized", None),
            _ => Reply::assigned("localhost", "dev1"),
        }
    };
    let dps = Dps::start(broker.plain_port(), Box::new(script)).await;
    let clock = ManualClock::at_unix(T0);
    let device = Device::start(&config(&broker, state.path(), &individual()), &clock);
    device
        .provisioning_reached("the failed assignment shown", |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("errorCode 400209: no linked IoT hub"))
        })
        .await;
    device
        .provisioning_reached("the 401 shown", |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("refused the credentials (401"))
        })
        .await;
    device.connected().await;
    assert_eq!(
        dps.requests()
            .iter()
            .filter(|r| r.kind == "register")
            .count(),
        3
    );
    assert!(device.provisioning.borrow().registrations >= 3);
    device.stop().await;
}

/// A cached identity the hub refuses (the device moved to another hub) is
/// forgotten: tether registers again and connects where DPS says now.
#[tokio::test]
async fn a_refused_cached_identity_registers_again() {
    let broker = Broker::start(identities(KEY));
    let state = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_unix(T0);
    let cfg = config(&broker, state.path(), &individual());
    // The broker knows dev1 on "localhost" only: the cached hub refuses it.
    let stale =
        provisioning::Assignment::new(Some("127.0.0.1".into()), Some("dev1".into())).unwrap();
    cache::write(
        state.path(),
        cfg.hub.provisioning.as_ref().unwrap(),
        &stale,
        T0,
    )
    .unwrap();
    let dps = Dps::start(broker.plain_port(), Box::new(register_then_poll)).await;

    let device = Device::start(&cfg, &clock);
    let mut status = device.hub.handle.watch_status();
    wait_for(&mut status, "the cached identity refused", |s| {
        s.last_failure == Some(Failure::Auth)
    })
    .await;
    device.connected().await;
    assert_eq!(dps.requests().len(), 2, "registered again");
    let p = cfg.hub.provisioning.as_ref().unwrap();
    let cached = cache::read(state.path(), p).unwrap().expect("cached again");
    assert_eq!(cached.assigned_hub, "localhost");
    device.stop().await;
}

/// A damaged cache file is no crash: tether registers again.
#[tokio::test]
async fn a_damaged_cache_registers_again() {
    let broker = Broker::start(identities(KEY));
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join(cache::CACHE_FILE),
        b"{\"version\":1,\"idSc",
    )
    .unwrap();
    let dps = Dps::start(broker.plain_port(), Box::new(register_then_poll)).await;
    let clock = ManualClock::at_unix(T0);
    let device = Device::start(&config(&broker, state.path(), &individual()), &clock);
    device.connected().await;
    assert_eq!(dps.requests().len(), 2);
    device.stop().await;
}

/// Over the websocket transport both DPS and the hub are reached with
/// `wss://` (path `/$iothub/websocket`).
#[tokio::test]
async fn the_websocket_transport_registers_and_connects_over_wss() {
    let broker = Broker::start(identities(KEY).websockets(true));
    let state = tempfile::tempdir().unwrap();
    let dps = Dps::start(broker.plain_port(), Box::new(register_then_poll)).await;
    let clock = ManualClock::at_unix(T0);
    let wss = broker.wss_port().expect("a wss listener");
    let cfg = config_on(
        &broker,
        wss,
        state.path(),
        "transport = \"websocket\"",
        &individual(),
    );
    let device = Device::start(&cfg, &clock);
    device.connected().await;
    assert_eq!(dps.requests().len(), 2);
    device.stop().await;
}

/// An x509 enrollment: the `[hub]` client certificate opens DPS and then
/// the hub, and no password is sent (the broker takes the certificate's CN
/// as the identity).
#[tokio::test]
async fn an_x509_certificate_registers_and_connects() {
    let broker = Broker::start(BrokerOptions::new().tls_client_certs(true));
    let issued = broker.issue_client_cert("dev1");
    let state = tempfile::tempdir().unwrap();
    let cert = state.path().join("dev1.pem");
    let key = state.path().join("dev1.key");
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let dps = Dps::start(broker.plain_port(), Box::new(register_then_poll)).await;
    let clock = ManualClock::at_unix(T0);
    let files = format!(
        "client_cert_file = \"{}\"\nclient_key_file = \"{}\"",
        cert.display(),
        key.display()
    );
    let cfg = config_on(&broker, broker.tls_port(), state.path(), &files, "");
    let device = Device::start(&cfg, &clock);
    let s = device.connected().await;
    assert_eq!(s.credential_expires_at, None, "no SAS token with x509");
    assert_eq!(dps.requests().len(), 2);
    device.stop().await;
}
