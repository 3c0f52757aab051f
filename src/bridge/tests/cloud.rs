//! The bridge's cloud side through a real Mosquitto (plain broker topic
//! scheme): direct methods, a C2D message and desired properties reach the
//! simulated MCU over the pty, and answers and reported properties come back.
//! The simulated MCU is the demo's (`tether_demo::mcu`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tether_demo::observer::Observer;
use tether_testkit::mcu::McuEvent;
use tether_testkit::{Broker, BrokerOptions};
use tokio_util::sync::CancellationToken;

use super::rig::{Rig, WAIT};
use crate::clock::SystemClock;
use crate::hub::{self, Hub, HubStatus, Router};
use crate::service::Beat;

/// A booted bridge wired to a hub session on `broker`, as app.rs wires it:
/// bridge first, methods registered, hub started, hub attached.
async fn start(broker: &Broker) -> (Rig, Hub, CancellationToken) {
    let text = format!(
        "[hub]\nurl = \"mqtt://127.0.0.1:{}\"\ndevice_id = \"dev1\"\nallow_insecure = true\nkeep_alive = \"5s\"\nconnect_timeout = \"5s\"\n",
        broker.plain_port()
    );
    let cfg = crate::config::parse(&text, broker.dir()).expect("valid test config");
    let mut rig = Rig::start_with(
        Duration::from_secs(5),
        None::<firmware_bridge::driver::NoPin>,
        None,
    )
    .await;
    let mut router = Router::new();
    crate::bridge::register(&mut router, &rig.bridge);
    let stop = CancellationToken::new();
    let hub = hub::start(
        &cfg.hub,
        router,
        Arc::new(SystemClock),
        serde_json::Map::new(),
        Beat::detached(),
        stop.clone(),
    )
    .expect("hub starts");
    rig.bridge.attach_hub(hub.handle.clone());
    let mut status = hub.handle.watch_status();
    tokio::time::timeout(WAIT, status.wait_for(HubStatus::is_subscribed))
        .await
        .expect("hub connects and subscribes")
        .expect("status channel open");
    rig.booted().await;
    (rig, hub, stop)
}

async fn stop_all(rig: Rig, hub: Hub, stop: CancellationToken) {
    rig.stop().await;
    stop.cancel();
    tokio::time::timeout(WAIT, hub.task)
        .await
        .expect("hub stops")
        .expect("hub task");
}

async fn call(cloud: &mut Observer, method: &str, rid: u32, body: Value) -> (String, Value) {
    let res = cloud
        .call("dev1", method, &rid.to_string(), body.to_string(), WAIT)
        .await
        .unwrap();
    (
        res.topic,
        serde_json::from_slice(&res.payload).expect("JSON answer"),
    )
}

/// `setAttribute` as a direct method round-trips through Mosquitto, the
/// bridge and the MCU: the answer is the MCU's UPDATE with status 200; a
/// SET the MCU refuses comes back 409; `getAttribute` answers 200 with the
/// MCU's value.
#[tokio::test]
async fn set_and_get_attribute_methods_round_trip_to_the_mcu() {
    let broker = Broker::start(BrokerOptions::new());
    let mut cloud =
        tether_testkit::cloud(broker.plain_port(), &["devices/dev1/methods/res/#"]).await;
    let (rig, hub, stop) = start(&broker).await;

    let (topic, body) = call(
        &mut cloud,
        "setAttribute",
        1,
        json!({"attributeId": 1, "value": "true"}),
    )
    .await;
    assert_eq!(topic, "devices/dev1/methods/res/200/?$rid=1", "{body}");
    assert_eq!(
        (body["attributeId"].clone(), body["value"].clone()),
        (json!(1), json!("true"))
    );
    assert_eq!(rig.mcu.value(1), Some(vec![1]));

    rig.mcu.refuse(1);
    let (topic, body) = call(
        &mut cloud,
        "setAttribute",
        2,
        json!({"attributeId": 1, "attributeData": "00"}),
    )
    .await;
    assert_eq!(topic, "devices/dev1/methods/res/409/?$rid=2", "{body}");
    assert_eq!(body["value"], "true", "the MCU kept its value");

    let (topic, body) = call(&mut cloud, "getAttribute", 3, json!({"attributeId": 1})).await;
    assert_eq!(topic, "devices/dev1/methods/res/200/?$rid=3", "{body}");
    assert_eq!(body["value"], "true");

    let (topic, _) = call(
        &mut cloud,
        "setAttribute",
        4,
        json!({"attributeId": 1030, "value": "1"}),
    )
    .await;
    assert_eq!(topic, "devices/dev1/methods/res/403/?$rid=4");
    stop_all(rig, hub, stop).await;
}

/// A C2D message of `type=setAttribute` with the same JSON applies the SET.
#[tokio::test]
async fn a_c2d_set_attribute_message_reaches_the_mcu() {
    let broker = Broker::start(BrokerOptions::new());
    let (mut rig, hub, stop) = start(&broker).await;
    let cloud = tether_testkit::cloud(broker.plain_port(), &[]).await;
    cloud
        .publish(
            "devices/dev1/messages/devicebound/%24.mid=m1&type=setAttribute",
            r#"{"attributeId":1,"value":"true"}"#,
            false,
        )
        .await
        .expect("publish");
    let seen = rig
        .mcu
        .wait("C2D SET", WAIT, |e| matches!(e, McuEvent::Set { .. }))
        .await;
    assert_eq!(
        seen,
        McuEvent::Set {
            attr_id: 1,
            value: vec![1],
            refused: false
        }
    );
    stop_all(rig, hub, stop).await;
}

/// Desired properties under `attributes` are applied (an MCU SET and a
/// module attribute UPDATE), and the last known values are reported back.
#[tokio::test]
async fn desired_attributes_are_applied_and_reported_back() {
    let broker = Broker::start(BrokerOptions::new());
    let (mut rig, hub, stop) = start(&broker).await;
    let mut cloud =
        tether_testkit::cloud(broker.plain_port(), &["devices/dev1/twin/reported"]).await;
    cloud
        .publish(
            "devices/dev1/twin/desired",
            json!({"attributes": {"1": "true", "1024": "2"}}).to_string(),
            true,
        )
        .await
        .expect("publish");
    rig.mcu
        .wait("desired SET", WAIT, |e| {
            matches!(e, McuEvent::Set { attr_id: 1, .. })
        })
        .await;
    rig.mcu
        .wait("desired 1024", WAIT, |e| {
            matches!(e, McuEvent::ModuleUpdate { attr_id: 1024, .. })
        })
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let p = cloud
            .next_on("devices/dev1/twin/reported", left)
            .await
            .unwrap();
        let doc: Value = serde_json::from_slice(&p.payload).expect("JSON reported");
        if doc["attributes"]["1"] == "true" && doc["attributes"]["1024"] == "2" {
            break;
        }
    }
    stop_all(rig, hub, stop).await;
}
