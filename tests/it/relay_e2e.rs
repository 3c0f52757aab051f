//! The relay behind the real hub session: the test plays IoT Hub by
//! publishing `RestApi` calls on `$iothub/methods/POST/RestApi/?$rid=N`
//! to a real Mosquitto and reading the answers, while a local HTTPS server
//! with Basic auth plays the controller.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tether::clock::ManualClock;
use tether::hub::credentials::azure_username;
use tether::hub::{HubStatus, Router};
use tether::relay::{Relay, Uploader};
use tether_protocol::sas;
use tether_testkit::http::{eclypse_tls, ECLYPSE_PASSWORD, ECLYPSE_USER};
use tether_testkit::{Broker, BrokerOptions, TestCa};

const WAIT: Duration = Duration::from_secs(10);
const T0: u64 = 1_900_000_000;
const KEY_B64: &str = "ZGV2aWNlLWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OSE=";

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
    let broker = Broker::start(
        BrokerOptions::new().user(&azure_username("localhost", "dev1"), token.expose()),
    );
    let ca = TestCa::new("controller test CA");
    let controller = eclypse_tls(&ca.issue_server(&["localhost", "127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let controller_ca = dir.path().join("controller-ca.pem");
    std::fs::write(&controller_ca, ca.cert_pem()).unwrap();

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
        "#,
        port = broker.tls_port(),
        hub_ca = broker.ca_pem_path().display(),
        base = controller.base_url().replace("127.0.0.1", "localhost"),
        controller_ca = controller_ca.display(),
    );
    let cfg = tether::config::parse(&text, dir.path()).expect("valid config");
    let clock = ManualClock::at_unix(T0);
    let relay = Arc::new(Relay::new(&cfg.relay, &cfg.controller, Uploader::Disabled).unwrap());
    let mut router = Router::new();
    let r = relay.clone();
    router.method("RestApi", move |call| {
        let r = r.clone();
        async move { r.handle(call).await }
    });
    let (hub, stop) = tether_testkit::hub::start(&cfg, router, Arc::new(clock));
    let mut cloud = tether_testkit::cloud(broker.plain_port(), &["$iothub/methods/res/#"]).await;
    let mut status = hub.handle.watch_status();
    tokio::time::timeout(WAIT, status.wait_for(HubStatus::is_subscribed))
        .await
        .unwrap()
        .unwrap();

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
    hub.task.await.unwrap();
}
