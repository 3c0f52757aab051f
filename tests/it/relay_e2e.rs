//! The relay behind the real daemon: the test plays IoT Hub by publishing
//! `RestApi` calls on `$iothub/methods/POST/RestApi/?$rid=N` to a real
//! Mosquitto and reading the answers, while a local HTTPS server with
//! Basic auth plays the controller. The daemon runs in the test process
//! (`tether::app::Daemon`) from a config, as `tether run` would; the
//! relay's own behaviour, call by call, is tested in the crate
//! (`src/relay/tests/`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tether::app::Daemon;
use tether_protocol::sas;
use tether_testkit::http::{eclypse_tls, ECLYPSE_PASSWORD, ECLYPSE_USER};
use tether_testkit::{Broker, BrokerOptions, ManualClock, TestCa};
use tokio_util::sync::CancellationToken;

use crate::dps_daemon::hub_username;

const WAIT: Duration = Duration::from_secs(10);
const T0: u64 = 1_900_000_000;
const KEY_B64: &str = "ZGV2aWNlLWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OSE=";
const ADMIN_TOKEN: &str = "relay-e2e-admin";

/// Polls the daemon's `/healthz` until its hub session has every
/// subscription in place: a call published earlier would find no method
/// subscription and never be answered.
async fn wait_subscribed(admin: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{admin}/healthz")).await {
            if let Ok(h) = answer.json::<Value>().await {
                if h["hub"]["subscribed"] == true {
                    return;
                }
                last = Some(h);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the daemon's hub session never subscribed: {last:?}");
}

/// A relayed GET reaches the controller with tether's Basic credentials and
/// the controller's answer comes back in the Cloud Relay shape with the
/// same status on the response topic; a path attack is answered 400.
#[tokio::test]
async fn relayed_calls_round_trip_through_the_hub() {
    let key = b"device-key-for-tests-0123456789!";
    let token = sas::sign(
        key,
        &sas::resource_uri("localhost", "dev1", None),
        T0 + 3600,
    );
    let broker = Broker::start(BrokerOptions::new().user(&hub_username(), token.expose()));
    let ca = TestCa::new("controller test CA");
    let controller = eclypse_tls(&ca.issue_server(&["localhost", "127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let controller_ca = dir.path().join("controller-ca.pem");
    std::fs::write(&controller_ca, ca.cert_pem()).unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");

    let text = format!(
        r#"
        [hub]
        connection_string = "HostName=localhost;DeviceId=dev1;SharedAccessKey={KEY_B64}"
        port = {port}
        ca_file = "{hub_ca}"
        keep_alive = "5s"

        [controller]
        base_url = "{base}"
        username = "{ECLYPSE_USER}"
        password = "{ECLYPSE_PASSWORD}"
        ca_file = "{controller_ca}"

        [store]
        path = "state"

        [admin]
        listen = "127.0.0.1:{admin}"
        token = "{ADMIN_TOKEN}"
        "#,
        port = broker.tls_port(),
        hub_ca = broker.ca_pem_path().display(),
        base = controller.base_url().replace("127.0.0.1", "localhost"),
        controller_ca = controller_ca.display(),
    );
    let cfg = tether::config::parse(&text, dir.path()).expect("valid config");
    let stop = CancellationToken::new();
    let daemon = Daemon::new(
        dir.path().join("tether.toml"),
        Arc::new(ManualClock::at_unix(T0)),
    );
    let run = tokio::spawn(daemon.run_until(cfg, stop.clone()));
    let mut cloud = tether_testkit::cloud(broker.plain_port(), &["$iothub/methods/res/#"]).await;
    wait_subscribed(admin).await;

    let call = json!({"path": "/api/rest/v1/info", "method": "GET", "headers": {"Accept": "application/json", "Authorization": "Bearer cloud-token"}});
    cloud
        .publish(
            "$iothub/methods/POST/RestApi/?$rid=1",
            call.to_string(),
            false,
        )
        .await
        .expect("publish");
    let res = cloud.next_on("$iothub/methods/res/", WAIT).await.unwrap();
    assert_eq!(res.topic, "$iothub/methods/res/200/?$rid=1");
    let answer: Value = serde_json::from_slice(&res.payload).unwrap();
    assert_eq!(answer["status"], 200);
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["apiRevision"], "8.0");
    let seen = controller.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0]
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));

    let attack = json!({"path": "//evil.example/x", "method": "GET"});
    cloud
        .publish(
            "$iothub/methods/POST/RestApi/?$rid=2",
            attack.to_string(),
            false,
        )
        .await
        .expect("publish");
    let res = cloud.next_on("$iothub/methods/res/", WAIT).await.unwrap();
    assert_eq!(res.topic, "$iothub/methods/res/400/?$rid=2");
    assert_eq!(
        controller.requests().len(),
        1,
        "the attack reached the controller"
    );
    stop.cancel();
    assert_eq!(run.await.expect("the daemon task"), 0);
}
