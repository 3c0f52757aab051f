//! Azure IoT Hub mode end to end against Mosquitto. Mosquitto cannot check
//! a SAS signature but can check an exact password: with an injected clock
//! the token is deterministic, so the expected token goes into its password
//! file. Covers acceptance, a wrong key, renewal by reconnecting, direct
//! methods and the twin on `$iothub/...` topics, an expired pre-made token,
//! and x509 client certificates.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tether_protocol::sas;
use tether_testkit::{Broker, BrokerOptions, ManualClock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::support::{self, stop as stop_hub, wait_for, WAIT};
use crate::hub::credentials::azure_username;
use crate::hub::Failure;
use crate::hub::{ConnState, Hub, HubStatus, MethodCall, MethodResponse, Router};

const T0: u64 = 1_900_000_000;
/// base64 of "device-key-for-tests-0123456789!"
const KEY_B64: &str = "ZGV2aWNlLWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OSE=";
const KEY: &[u8] = b"device-key-for-tests-0123456789!";
/// Three of the daemon's token-renewal checks (one a second): long enough
/// for a renewal that is due to have happened.
const RENEWAL_CHECKS: Duration = Duration::from_secs(3);

fn username() -> String {
    azure_username("localhost", "dev1")
}

fn token(key: &[u8], se: u64) -> String {
    sas::sign(key, &sas::resource_uri("localhost", "dev1", None), se)
        .expose()
        .to_string()
}

fn config(broker: &Broker, conn: &str, ttl: &str, extra: &str) -> crate::config::Config {
    let text = format!(
        r#"
        [hub]
        connection_string = "{conn}"
        port = {port}
        ca_file = "{ca}"
        sas_ttl = "{ttl}"
        keep_alive = "5s"
        connect_timeout = "5s"
        {extra}
        "#,
        port = broker.tls_port(),
        ca = broker.ca_pem_path().display(),
    );
    crate::config::parse(&text, broker.dir()).expect("valid test config")
}

fn key_conn() -> String {
    format!("HostName=localhost;DeviceId=dev1;SharedAccessKey={KEY_B64}")
}

fn start(
    cfg: &crate::config::Config,
    router: Router,
    clock: &ManualClock,
) -> (Hub, CancellationToken) {
    support::start(cfg, router, Arc::new(clock.clone()))
}

/// The SAS token computed from the device key and the injected clock is
/// exactly what the broker expects for the IoT Hub username.
#[tokio::test]
async fn a_correct_sas_token_is_accepted() {
    let broker = Broker::start(BrokerOptions::new().user(&username(), &token(KEY, T0 + 3600)));
    let clock = ManualClock::at_unix(T0);
    let cfg = config(&broker, &key_conn(), "1h", "");
    let (hub, stop) = start(&cfg, Router::new(), &clock);
    let mut status = hub.handle.watch_status();
    let s = wait_for(&mut status, "connected", HubStatus::is_connected).await;
    assert_eq!(s.credential_expires_at, Some(T0 + 3600));
    stop_hub(hub, stop).await;
}

/// A token signed with another key is refused as bad credentials.
#[tokio::test]
async fn a_wrong_key_is_refused() {
    let broker =
        Broker::start(BrokerOptions::new().user(&username(), &token(b"another key", T0 + 3600)));
    let clock = ManualClock::at_unix(T0);
    let cfg = config(&broker, &key_conn(), "1h", "");
    let (hub, stop) = start(&cfg, Router::new(), &clock);
    let mut status = hub.handle.watch_status();
    let s = wait_for(&mut status, "refused", |s| s.last_failure.is_some()).await;
    assert_eq!(s.last_failure, Some(Failure::Auth));
    assert!(!s.last_error.unwrap().contains(KEY_B64));
    stop_hub(hub, stop).await;
}

/// At 80 % of its life the token is renewed by reconnecting with a fresh
/// one: the broker only knows the new token by then.
#[tokio::test]
async fn renewal_reconnects_with_a_new_token() {
    let ttl = 4;
    let broker = Broker::start(BrokerOptions::new().user(&username(), &token(KEY, T0 + ttl)));
    let clock = ManualClock::at_unix(T0);
    // The config file insists on at least a minute; the test needs seconds.
    let mut cfg = config(&broker, &key_conn(), "1h", "");
    cfg.hub.sas_ttl = Duration::from_secs(ttl);
    let (hub, stop) = start(&cfg, Router::new(), &clock);
    let mut status = hub.handle.watch_status();
    wait_for(&mut status, "connected", HubStatus::is_connected).await;

    // Time moves on; only the next token will be accepted.
    clock.advance(Duration::from_secs(100));
    broker.set_users(&[(&username(), &token(KEY, T0 + 100 + ttl))]);
    broker.reload();
    let s = wait_for(&mut status, "renewed", |s| {
        s.is_connected() && s.connects == 2
    })
    .await;
    assert_eq!(s.credential_expires_at, Some(T0 + 100 + ttl));
    assert_eq!(
        s.last_failure, None,
        "renewal is not a failure: {:?}",
        s.last_error
    );
    stop_hub(hub, stop).await;
}

/// The wall clock jumping three days forward (NTP correcting a stale
/// clock) renews the token at once, for the new time, and reconnects; a
/// jump back neither renews nor drops the session.
#[tokio::test]
async fn wall_clock_jumps_renew_once_forward_and_never_backward() {
    const DAYS: u64 = 3 * 86_400;
    let broker = Broker::start(BrokerOptions::new().user(&username(), &token(KEY, T0 + 3600)));
    let clock = ManualClock::at_unix(T0);
    let cfg = config(&broker, &key_conn(), "1h", "");
    let (hub, stop) = start(&cfg, Router::new(), &clock);
    let mut status = hub.handle.watch_status();
    wait_for(&mut status, "connected", HubStatus::is_connected).await;

    clock.set_unix(T0 - DAYS);
    // Several renewal checks pass: nothing happens.
    tokio::time::sleep(RENEWAL_CHECKS).await;
    let s = hub.handle.status();
    assert!(s.is_connected());
    assert_eq!(
        (s.connects, s.disconnects),
        (1, 0),
        "no renewal after a jump back"
    );

    clock.set_unix(T0 + DAYS);
    broker.set_users(&[(&username(), &token(KEY, T0 + DAYS + 3600))]);
    broker.reload();
    let s = wait_for(&mut status, "renewed", |s| {
        s.is_connected() && s.connects == 2
    })
    .await;
    assert_eq!(s.credential_expires_at, Some(T0 + DAYS + 3600));
    assert_eq!(s.last_failure, None, "{:?}", s.last_error);
    tokio::time::sleep(RENEWAL_CHECKS).await;
    assert_eq!(
        hub.handle.status().connects,
        2,
        "renewed once, not in a loop"
    );
    stop_hub(hub, stop).await;
}

/// Direct methods arrive on `$iothub/methods/POST/{name}/?$rid=` and are
/// answered on `$iothub/methods/res/{status}/?$rid=`; the twin is fetched
/// on connect and its desired properties reach the registered handler.
#[tokio::test]
async fn methods_and_twin_use_the_iothub_topics() {
    let broker = Broker::start(BrokerOptions::new().user(&username(), &token(KEY, T0 + 3600)));
    let mut cloud = tether_testkit::cloud(
        broker.plain_port(),
        &[
            "$iothub/methods/res/#",
            "$iothub/twin/GET/#",
            "$iothub/twin/PATCH/properties/reported/#",
        ],
    )
    .await;
    let clock = ManualClock::at_unix(T0);
    let cfg = config(&broker, &key_conn(), "1h", "");
    let (desired_tx, mut desired_rx) = mpsc::channel(4);
    let mut router = Router::new();
    router.method("Echo", |c: MethodCall| async move {
        MethodResponse {
            status: 201,
            body: c.payload,
        }
    });
    router.desired(move |doc, full| {
        let _ = desired_tx.try_send((doc, full));
    });
    let (hub, stop) = start(&cfg, router, &clock);
    let mut status = hub.handle.watch_status();
    wait_for(&mut status, "connected", HubStatus::is_connected).await;

    let get = cloud.next_on("$iothub/twin/GET/", WAIT).await.unwrap();
    let rid = get.topic.rsplit("$rid=").next().unwrap().to_string();
    let reported = cloud
        .next_on("$iothub/twin/PATCH/properties/reported/", WAIT)
        .await
        .unwrap();
    let reported: Value = serde_json::from_slice(&reported.payload).unwrap();
    assert!(reported.is_object());
    let twin = json!({"desired": {"attributes": {"1": "true"}, "$version": 3}, "reported": {}});
    cloud
        .publish(
            &format!("$iothub/twin/res/200/?$rid={rid}"),
            twin.to_string(),
            false,
        )
        .await
        .expect("publish");
    let (doc, full) = tokio::time::timeout(WAIT, desired_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(full);
    assert_eq!(doc["attributes"]["1"], "true");

    let patch = json!({"attributes": {"1": "false"}, "$version": 4});
    cloud
        .publish(
            "$iothub/twin/PATCH/properties/desired/?$version=4",
            patch.to_string(),
            false,
        )
        .await
        .expect("publish");
    let (doc, full) = tokio::time::timeout(WAIT, desired_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!full);
    assert_eq!(doc["attributes"]["1"], "false");

    cloud
        .publish("$iothub/methods/POST/Echo/?$rid=9", r#"{"x":1}"#, false)
        .await
        .expect("publish");
    let res = cloud.next_on("$iothub/methods/res/", WAIT).await.unwrap();
    assert_eq!(res.topic, "$iothub/methods/res/201/?$rid=9");
    assert_eq!(&res.payload[..], br#"{"x":1}"#);
    stop_hub(hub, stop).await;
}

/// A pre-made SharedAccessSignature that has expired cannot be renewed:
/// the status says so, and the session keeps retrying.
#[tokio::test]
async fn an_expired_premade_token_is_reported() {
    let expired = token(KEY, T0 - 10);
    let broker = Broker::start(BrokerOptions::new().user(&username(), &expired));
    let clock = ManualClock::at_unix(T0);
    let conn = format!("HostName=localhost;DeviceId=dev1;SharedAccessSignature={expired}");
    let cfg = config(&broker, &conn, "1h", "");
    let (hub, stop) = start(&cfg, Router::new(), &clock);
    let mut status = hub.handle.watch_status();
    let s = wait_for(&mut status, "expired reported", |s| s.credential_expired).await;
    assert!(s.last_error.unwrap().contains("cannot renew"));
    // The token is still presented (the clock may be wrong) and retried.
    wait_for(&mut status, "connected anyway", HubStatus::is_connected).await;
    stop_hub(hub, stop).await;
}

/// x509: the client certificate authenticates and no password is sent.
#[tokio::test]
async fn x509_authenticates_with_the_client_certificate() {
    let broker = Broker::start(BrokerOptions::new().tls_client_certs(true));
    let issued = broker.issue_client_cert("dev1");
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("dev1.pem");
    let key = dir.path().join("dev1.key");
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let clock = ManualClock::at_unix(T0);
    let extra = format!(
        "client_cert_file = \"{}\"\nclient_key_file = \"{}\"",
        cert.display(),
        key.display()
    );
    let cfg = config(
        &broker,
        "HostName=localhost;DeviceId=dev1;x509=true",
        "1h",
        &extra,
    );
    let (hub, stop) = start(&cfg, Router::new(), &clock);
    let mut status = hub.handle.watch_status();
    let s = wait_for(&mut status, "connected", HubStatus::is_connected).await;
    assert_eq!(s.credential_expires_at, None);
    stop_hub(hub, stop).await;
}

/// A device without a real-time clock boots in 1970: no SAS token is minted
/// until the clock is plausible, and the status says why it waits.
#[tokio::test]
async fn waits_for_a_plausible_clock_before_connecting() {
    let broker = Broker::start(BrokerOptions::new().user(&username(), &token(KEY, T0 + 3600)));
    let clock = ManualClock::at_unix(86_400);
    let cfg = config(&broker, &key_conn(), "1h", "");
    let (hub, stop) = start(&cfg, Router::new(), &clock);
    let mut status = hub.handle.watch_status();
    wait_for(&mut status, "waiting for the clock", |s| {
        s.state == ConnState::WaitingForClock
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hub.handle.status().connects, 0);
    clock.set_unix(T0);
    let s = wait_for(&mut status, "connected", HubStatus::is_connected).await;
    assert_eq!(s.credential_expires_at, Some(T0 + 3600));
    stop_hub(hub, stop).await;
}
