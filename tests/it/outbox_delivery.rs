//! The outbox delivering to a real Mosquitto: the attribute message shape,
//! PUBACK-driven removal, order across a broker outage, no loss when the
//! broker dies with unacknowledged messages, batching, and bad input.

use std::time::Duration;

use crate::outbox_rig::{Rig, RigOptions, Subscriber, EVENTS, TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tether_testkit::{Broker, BrokerOptions};

const WAIT: Duration = Duration::from_secs(20);

fn broker() -> Broker {
    Broker::start(BrokerOptions::new().persistence(true))
}

/// A posted change and a posted batch arrive in Afero's shape with the
/// pinned property bag, and leave the outbox once PUBACKed.
#[tokio::test]
async fn posted_attributes_reach_the_hub_in_afero_shape_and_leave_on_puback() {
    let broker = broker();
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let rig = Rig::start(
        broker.plain_port(),
        RigOptions {
            store: "[store.extended_data]\nserial = \"SN-1\"\n".into(),
            ..Default::default()
        },
    )
    .await;
    let (status, _, body) = rig
        .call(
            Method::POST,
            "/v1/attributes",
            Some(json!({"attributeId": 1024, "attributeData": "F4FF", "attributeDataType": "SINT16"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let first = body["ids"][0].as_str().unwrap().to_string();
    let (status, _, body) = rig
        .call(
            Method::POST,
            "/v1/attributes",
            Some(json!([
                {"attributeId": 1, "value": true, "attributeDataType": "BOOLEAN"},
                {"attributeId": 2, "value": "21.5", "attributeDataType": "Q_15_16"},
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let mut ids = vec![first.clone()];
    ids.extend(
        body["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string()),
    );
    let order = sub.until_all(&ids, WAIT).await;
    assert_eq!(order, ids, "in order, once each");

    let p = &sub.seen[0];
    assert_eq!(
        p.topic,
        format!("{EVENTS}%24.mid={first}&%24.ct=application%2Fjson&%24.ce=utf-8&type=attribute")
    );
    let m: Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(m["id"], first.as_str());
    assert_eq!(m["deviceId"], "dev1");
    assert!(m["utcTimestamp"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(m["attributeId"], 1024);
    assert_eq!(m["attributeData"], "f4ff");
    assert_eq!(m["attributeDataType"], "SINT16");
    assert_eq!(m["attributeDataConverted"], "-12");
    assert_eq!(m["extendedData"], json!({"serial": "SN-1"}));
    let b: Value = serde_json::from_slice(&sub.seen[1].payload).unwrap();
    assert_eq!(
        (
            b["attributeData"].as_str(),
            b["attributeDataConverted"].as_str()
        ),
        (Some("01"), Some("true"))
    );
    let q: Value = serde_json::from_slice(&sub.seen[2].payload).unwrap();
    assert_eq!(q["attributeDataConverted"], "21.5");

    let s = rig
        .wait_stats("all acknowledged and removed", WAIT, |s| s.messages == 0)
        .await;
    assert_eq!(
        (s.sinks[0].depth, s.sinks[0].delivered, s.accepted),
        (0, 3, 3)
    );
}

/// Messages accepted while the broker is down wait on disk and arrive, in
/// order, after it comes back.
#[tokio::test]
async fn messages_accepted_while_the_broker_is_down_arrive_in_order_after_it_returns() {
    let mut broker = broker();
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let rig = Rig::start(broker.plain_port(), RigOptions::default()).await;
    let before = rig.submit(10, 10).await;
    sub.until_all(&before, WAIT).await;
    rig.wait_stats("acknowledged", WAIT, |s| s.sinks[0].delivered == 10)
        .await;
    broker.stop();
    let during = rig.submit(500, 50).await;
    let s = rig.stats().await;
    assert_eq!(s.sinks[0].depth, 500, "all waiting: {s:?}");
    assert!(
        s.sinks[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .starts_with("hub unreachable since"),
        "{s:?}"
    );
    broker.restart();
    let order = sub.until_all(&during, WAIT).await;
    let after: Vec<&String> = order.iter().filter(|id| during.contains(id)).collect();
    let mut dedup = after.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        during.iter().collect::<Vec<_>>(),
        "in acceptance order"
    );
    rig.wait_stats("drained", WAIT, |s| s.messages == 0).await;
}

/// The broker freezes (no PUBACKs) while messages are in flight and is then
/// killed: tether resends every unacknowledged message itself after the
/// restart, with the same ids; nothing is lost and resends are counted.
#[tokio::test]
async fn a_broker_killed_with_unacked_messages_in_flight_loses_nothing() {
    let mut broker = broker();
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let rig = Rig::start(broker.plain_port(), RigOptions::default()).await;
    let first = rig.submit(50, 10).await;
    sub.until_all(&first, WAIT).await;
    broker.freeze();
    let frozen = rig.submit(200, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rig.stats().await.sinks[0].depth > 0, "waiting for PUBACKs");
    broker.kill();
    broker.restart();
    let all: Vec<String> = first.iter().chain(&frozen).cloned().collect();
    sub.until_all(&all, WAIT).await;
    let s = rig.wait_stats("drained", WAIT, |s| s.messages == 0).await;
    assert!(
        s.sinks[0].duplicates > 0,
        "unacked messages were sent again: {s:?}"
    );
}

/// Batching sends several attribute messages as one JSON array, in order.
#[tokio::test]
async fn batching_packs_messages_into_arrays_in_order() {
    let broker = broker();
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let rig = Rig::start(
        broker.plain_port(),
        RigOptions {
            store: "batch_max_bytes = 4096\n".into(),
            ..Default::default()
        },
    )
    .await;
    let ids = rig.submit(300, 300).await;
    let order = sub.until_all(&ids, WAIT).await;
    let mut dedup = order.clone();
    dedup.dedup();
    assert_eq!(dedup, ids);
    assert!(
        sub.seen.len() < 300 / 5,
        "{} publishes for 300 messages",
        sub.seen.len()
    );
    assert!(sub.seen.iter().all(|p| p.payload.len() <= 4096));
}

/// Malformed input is refused with 400 naming the field, nothing is kept;
/// without the token, 401.
#[tokio::test]
async fn bad_intake_input_is_refused_with_the_field_and_nothing_is_kept() {
    let broker = broker();
    let rig = Rig::start(broker.plain_port(), RigOptions::default()).await;
    let (status, _, body) = rig
        .call(
            Method::POST,
            "/v1/attributes",
            Some(json!([
                {"attributeId": 1, "value": 1, "attributeDataType": "SINT8"},
                {"attributeId": 2, "attributeData": "zz", "attributeDataType": "BYTES"},
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "[1].attributeData", "{body}");
    assert_eq!(rig.stats().await.accepted, 0, "nothing half-written");
    let resp = rig
        .http
        .post(rig.url("/v1/attributes"))
        .json(&json!({"attributeId": 1, "value": 1, "attributeDataType": "SINT8"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = rig
        .http
        .post(rig.url("/v1/attributes"))
        .bearer_auth(TOKEN)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Health and metrics are open.
    let h = rig
        .http
        .get(rig.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        h.contains("tether_outbox_queue_depth{sink=\"hub\"} 0"),
        "{h}"
    );
    assert!(h.contains("tether_outbox_store_disk_bytes"), "{h}");
    let h: Value = rig
        .http
        .get(rig.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        h["components"]["outbox"]["details"]["storeWritable"], true,
        "{h}"
    );
}
