//! Scheduled relay calls through the real daemon: results taken while the
//! broker is down wait in the outbox and are delivered once it returns,
//! with `type=relay-schedule` and the controller's answer.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tether_testkit::http::{eclypse, ECLYPSE_PASSWORD, ECLYPSE_USER};
use tether_testkit::{Broker, BrokerOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tether");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every second the schedule reads `/api/rest/v1/info`; with the broker
/// killed for a few seconds, the results of those seconds still arrive.
#[tokio::test]
async fn schedule_results_taken_offline_are_delivered_after_the_outage() {
    let mut broker = Broker::start(BrokerOptions::new().user("dev1", "pw"));
    let controller = eclypse().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tether.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[hub]
url = "mqtts://localhost:{port}"
device_id = "dev1"
username = "dev1"
password = "pw"
ca_file = "{ca}"
keep_alive = "5s"

[controller]
base_url = "{base}"
username = "{ECLYPSE_USER}"
password = "{ECLYPSE_PASSWORD}"

[[relay.schedule]]
name = "info"
every = "1s"
method = "GET"
path = "/api/rest/v1/info"

[store]
path = "state"
"#,
            port = broker.tls_port(),
            ca = broker.ca_pem_path().display(),
            base = controller.base_url(),
        ),
    )
    .unwrap();
    let mut cloud =
        tether_testkit::cloud(broker.plain_port(), &["devices/dev1/messages/events/#"]).await;
    let _daemon = Daemon(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let first = cloud
        .next_on("devices/dev1/messages/events/", Duration::from_secs(15))
        .await
        .unwrap();
    assert!(
        first.topic.ends_with("type=relay-schedule"),
        "{}",
        first.topic
    );
    let doc: Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(doc["schedule"], "info");
    assert_eq!(doc["status"], 200);

    broker.kill();
    let down_from = now_ms();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let down_to = now_ms();
    broker.restart();
    let mut cloud =
        tether_testkit::cloud(broker.plain_port(), &["devices/dev1/messages/events/#"]).await;
    let mut taken_offline = 0;
    while let Ok(p) = cloud
        .next_on("devices/dev1/messages/events/", Duration::from_secs(15))
        .await
    {
        let doc: Value = serde_json::from_slice(&p.payload).unwrap();
        let at = doc["atUnixMs"].as_u64().unwrap();
        if (down_from + 500..down_to).contains(&at) {
            taken_offline += 1;
        }
        if taken_offline >= 2 {
            break;
        }
    }
    assert!(
        taken_offline >= 2,
        "only {taken_offline} results from the outage arrived"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
