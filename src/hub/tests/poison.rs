//! Poison inbound messages (issue 16) against a real Mosquitto that accepts
//! any size (`message_size_limit 0`): an oversize method call, C2D message
//! or retained desired document, a burst of 1,000 calls, garbage from a
//! broker. Each costs only itself: the session stays connected, answers what
//! it can (413 on the `$rid` of an oversize call), counts the refusal and
//! never hands a refused message to a handler. The real binary with poison
//! queued for it is `tests/it/hub_poison.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tether_demo::observer::Observer;
use tether_testkit::poison::{big_json, poison_broker, publish_big};
use tether_testkit::Broker;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::support::{self, plain_config, stop as stop_hub, wait_for, WAIT};
use crate::clock::SystemClock;
use crate::hub::{C2dMessage, Hub, HubStatus, MethodCall, MethodResponse, Router};

/// Larger than tether's 264 KiB packet limit, like the call in the issue.
const OVERSIZE: usize = 300 * 1024;
const METHODS: &str = "devices/dev1/methods/POST";
const ANSWERS: &str = "devices/dev1/methods/res/";

fn echo_router() -> Router {
    let mut r = Router::new();
    r.method("Echo", |c: MethodCall| async move {
        MethodResponse {
            status: 200,
            body: c.payload,
        }
    });
    r
}

/// A connected device whose subscriptions are in place: a probe call sent
/// until one is answered (any status) proves it, since tether subscribes to
/// methods, C2D and the desired document in one SUBSCRIBE.
async fn device(broker: &Broker, router: Router) -> (Hub, CancellationToken) {
    let cfg = plain_config(broker, "s3cret", &broker.ca_pem_path());
    let (hub, stop) = support::start(&cfg, router, Arc::new(SystemClock));
    support::connected(&hub).await;
    let mut probe = tether_testkit::cloud(broker.plain_port(), &[&format!("{ANSWERS}#")]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    for n in 0.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the device never answered a probe"
        );
        let rid = format!("probe{n}");
        probe
            .publish(&format!("{METHODS}/Probe/?$rid={rid}"), "{}", false)
            .await
            .expect("publish");
        let answer = probe
            .next_on(ANSWERS, Duration::from_millis(500))
            .await
            .ok();
        if answer.is_some_and(|a| a.topic.ends_with(&format!("?$rid={rid}"))) {
            break;
        }
    }
    (hub, stop)
}

/// The next method answer that is not for a probe of [`device`].
async fn next_answer(cloud: &mut Observer) -> rumqttc::Publish {
    loop {
        let a = cloud.next_on(ANSWERS, WAIT).await.unwrap();
        if !a.topic.contains("?$rid=probe") {
            return a;
        }
    }
}

fn assert_one_connection(s: &HubStatus) {
    assert_eq!((s.connects, s.disconnects), (1, 0), "{:?}", s.last_error);
}

/// An oversize call is answered 413 on its `$rid` with the default error
/// shape, counted once; the next call on the same connection is served.
#[tokio::test]
async fn an_oversize_method_call_is_answered_413_and_the_link_stays_up() {
    let broker = poison_broker();
    let mut cloud = tether_testkit::cloud(broker.plain_port(), &[&format!("{ANSWERS}#")]).await;
    let (hub, stop) = device(&broker, echo_router()).await;

    let topic = format!("{METHODS}/Echo/?$rid=7");
    cloud
        .publish(&topic, big_json(OVERSIZE), false)
        .await
        .expect("publish");
    let answer = next_answer(&mut cloud).await;
    assert_eq!(answer.topic, format!("{ANSWERS}413/?$rid=7"));
    let body: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(body["error"], "payload_too_large");
    assert!(body["detail"].as_str().unwrap().contains("bytes"), "{body}");

    cloud
        .publish(&format!("{METHODS}/Echo/?$rid=8"), r#"{"ok":1}"#, false)
        .await
        .expect("publish");
    let answer = next_answer(&mut cloud).await;
    assert_eq!(answer.topic, format!("{ANSWERS}200/?$rid=8"));
    let s = hub.handle.status();
    assert_one_connection(&s);
    assert_eq!(s.inbound_refused.too_large, 1);
    stop_hub(hub, stop).await;
}

/// An oversize C2D message and one that is not JSON are acknowledged and
/// counted without reaching the handler; the valid one after them does.
#[tokio::test]
async fn oversize_and_non_json_c2d_messages_are_refused_alone() {
    let broker = poison_broker();
    let (tx, mut rx) = mpsc::channel(8);
    let mut router = Router::new();
    router.c2d("setAttribute", move |m: C2dMessage| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(m.payload).await;
            Ok(())
        }
    });
    let (hub, stop) = device(&broker, router).await;

    let topic = "devices/dev1/messages/devicebound/type=setAttribute";
    let cloud = tether_testkit::cloud(broker.plain_port(), &[]).await;
    cloud
        .publish(topic, big_json(OVERSIZE), false)
        .await
        .expect("publish");
    cloud
        .publish(topic, b"\xff\x00 not json".to_vec(), false)
        .await
        .expect("publish");
    cloud
        .publish(topic, r#"{"value":1}"#, false)
        .await
        .expect("publish");
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("handled");
    assert_eq!(got.as_deref(), Some(&br#"{"value":1}"#[..]));
    let s = wait_for(&mut hub.handle.watch_status(), "two refusals", |s| {
        s.inbound_refused.too_large == 1 && s.inbound_refused.not_json == 1
    })
    .await;
    assert_one_connection(&s);
    assert!(rx.try_recv().is_err(), "the handler saw a refused message");
    stop_hub(hub, stop).await;
}

/// A retained desired document too large to read is refused when the
/// device subscribes (it is sent again on each subscription, never in a
/// loop); a later valid document still reaches the handler.
#[tokio::test]
async fn an_oversize_retained_desired_document_is_refused_and_later_ones_apply() {
    let broker = poison_broker();
    let desired = "devices/dev1/twin/desired";
    publish_big(broker.plain_port(), desired, big_json(OVERSIZE), true).await;
    let (tx, mut rx) = mpsc::channel(8);
    let mut router = Router::new();
    router.desired(move |doc, full| {
        let _ = tx.try_send((doc, full));
    });
    let (hub, stop) = device(&broker, router).await;
    wait_for(&mut hub.handle.watch_status(), "the refusal", |s| {
        s.inbound_refused.too_large == 1
    })
    .await;

    let cloud = tether_testkit::cloud(broker.plain_port(), &[]).await;
    cloud
        .publish(desired, r#"{"setpoint":21}"#, true)
        .await
        .expect("publish");
    let (doc, full) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("delivered")
        .unwrap();
    assert_eq!((doc, full), (json!({"setpoint": 21}), true));
    assert_one_connection(&hub.handle.status());
    stop_hub(hub, stop).await;
}

/// 1,000 calls published at once are each answered (200, or 503 beyond the
/// concurrent-call limit), all on the first connection.
#[tokio::test]
async fn a_burst_of_1000_method_calls_is_answered_on_one_connection() {
    let broker = poison_broker();
    let mut cloud = tether_testkit::cloud(broker.plain_port(), &[&format!("{ANSWERS}#")]).await;
    let (hub, stop) = device(&broker, echo_router()).await;

    let burst = tether_testkit::cloud(broker.plain_port(), &[]).await;
    for rid in 0..1000 {
        let topic = format!("{METHODS}/Echo/?$rid={rid}");
        burst
            .publish(&topic, r#"{"n":1}"#, false)
            .await
            .expect("publish");
    }
    let mut answered = HashSet::new();
    while (0..1000).any(|rid: u32| !answered.contains(&rid.to_string())) {
        let Some(a) = cloud.next_on(ANSWERS, WAIT).await.ok() else {
            let s = hub.handle.status();
            let missing: Vec<u32> = (0..1000)
                .filter(|rid: &u32| !answered.contains(&rid.to_string()))
                .collect();
            let log = broker.log();
            let drops: Vec<&str> = log.lines().filter(|l| l.contains("isconnect")).collect();
            panic!(
                "{} of 1000 answered; missing {missing:?}; device {s:?}; broker: {drops:#?}",
                answered.len()
            );
        };
        if a.topic.contains("?$rid=probe") {
            continue;
        }
        let (status, rid) = a.topic[ANSWERS.len()..].split_once("/?$rid=").unwrap();
        assert!(status == "200" || status == "503", "{}", a.topic);
        answered.insert(rid.to_string());
    }
    assert_one_connection(&hub.handle.status());
    stop_hub(hub, stop).await;
}

/// A scripted broker on loopback: accepts each connection, answers CONNACK,
/// then either sends a packet no client can read (type 15) or hangs up.
async fn scripted_broker(send_garbage: bool) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut connect = [0u8; 512];
            if sock.read(&mut connect).await.unwrap_or(0) == 0 {
                continue;
            }
            let _ = sock.write_all(&[0x20, 0x02, 0x00, 0x00]).await;
            if send_garbage {
                let _ = sock.write_all(&[0xF0, 0x00]).await;
                // Keep the socket open: tether is the one dropping it.
                let _ = sock.read(&mut connect).await;
            }
        }
    });
    port
}

async fn quick_drop_diagnosis(send_garbage: bool) -> String {
    let port = scripted_broker(send_garbage).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[hub]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"dev1\"\nallow_insecure = true\n\
         keep_alive = \"5s\"\nconnect_timeout = \"2s\"\n[store]\npath = \"{}\"\n",
        dir.path().join("store").display()
    );
    let cfg = crate::config::parse(&text, dir.path()).unwrap();
    let (hub, stop) = support::start(&cfg, Router::new(), Arc::new(SystemClock));
    let mut status = hub.handle.watch_status();
    // Backoff between the drops is jittered up to 1 + 2 + 4 s.
    let diagnosed = tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("times right after"))
        }),
    )
    .await;
    let error = match diagnosed {
        Ok(Ok(s)) => s.last_error.clone().unwrap(),
        _ => panic!(
            "no quick-drop diagnosis; last status {:?}",
            hub.handle.status()
        ),
    };
    stop_hub(hub, stop).await;
    error
}

/// Repeated drops right after CONNACK are diagnosed by who dropped: a
/// packet tether refuses to read, or the broker hanging up (another client
/// with the device id).
#[tokio::test]
async fn quick_drops_say_whether_tether_refused_a_packet_or_the_broker_hung_up() {
    let refused = quick_drop_diagnosis(true).await;
    assert!(
        refused.contains("cannot read") && refused.contains("same packet again"),
        "{refused}"
    );
    assert!(!refused.contains("another client"), "{refused}");
    let closed = quick_drop_diagnosis(false).await;
    assert!(closed.contains("another client"), "{closed}");
    assert!(closed.contains("\"dev1\""), "{closed}");
}
