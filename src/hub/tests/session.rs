//! The hub session against a real Mosquitto: TLS with passwords, refused
//! credentials and certificates, broker restarts, method calls, telemetry
//! and presence, in the plain-broker topic scheme.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tether_demo::observer::Observer;
use tether_testkit::{untrusted_ca_pem, Broker, BrokerOptions};
use tokio_util::sync::CancellationToken;

use super::support::{self, plain_config, stop as stop_hub, wait_for, WAIT};
use crate::clock::SystemClock;
use crate::hub::Failure;
use crate::hub::{
    C2dMessage, ConnState, Delivery, Hub, HubStatus, MethodCall, MethodResponse, Router, Telemetry,
};

fn start(cfg: &crate::config::Config, router: Router) -> (Hub, CancellationToken) {
    support::start(cfg, router, Arc::new(SystemClock))
}

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

/// A connected device with the Echo method, and a cloud client reading
/// method answers.
async fn echo_device_and_cloud() -> (Broker, Hub, CancellationToken, Observer) {
    let broker = broker_with_dev1();
    let cfg = plain_config(&broker, "s3cret", &broker.ca_pem_path());
    let cloud = tether_testkit::cloud(broker.plain_port(), &["devices/dev1/methods/res/#"]).await;
    let (hub, stop) = start(&cfg, echo_router());
    support::subscribed(&hub).await;
    (broker, hub, stop, cloud)
}

fn broker_with_dev1() -> Broker {
    Broker::start(BrokerOptions::new().user("dev1", "s3cret"))
}

/// A device with the right password connects over TLS, announces itself
/// retained, and its telemetry arrives with the pinned topic and property
/// bag; the PUBACK comes back as a delivery notice for its token.
#[tokio::test]
async fn connects_over_tls_with_a_password_and_publishes_telemetry() {
    let broker = broker_with_dev1();
    let cfg = plain_config(&broker, "s3cret", &broker.ca_pem_path());
    let mut cloud = tether_testkit::cloud(broker.plain_port(), &["devices/dev1/#"]).await;
    let (mut hub, stop) = start(&cfg, Router::new());
    support::connected(&hub).await;
    assert_eq!(hub.deliveries.recv().await, Some(Delivery::Connected(1)));

    let online = cloud.next_on("devices/dev1/status", WAIT).await.unwrap();

    let online: Value = serde_json::from_slice(&online.payload).unwrap();
    assert_eq!(online["online"], true);

    let msg = Telemetry {
        message_id: "0b6e5a55-1f3c-4f55-9d3a-3d0b5f8c0001".into(),
        message_type: "attribute".into(),
        payload: br#"{"attributeId":1}"#.as_slice().into(),
        properties: vec![],
    };
    let publish = hub.handle.prepare(&msg).unwrap();
    hub.handle.publish(&publish, Some(77)).await.unwrap();
    let got = cloud
        .next_on("devices/dev1/messages/events/", WAIT)
        .await
        .unwrap();
    assert_eq!(
        got.topic,
        "devices/dev1/messages/events/%24.mid=0b6e5a55-1f3c-4f55-9d3a-3d0b5f8c0001\
         &%24.ct=application%2Fjson&%24.ce=utf-8&type=attribute"
    );
    assert_eq!(&got.payload[..], br#"{"attributeId":1}"#);
    let ack = tokio::time::timeout(WAIT, hub.deliveries.recv())
        .await
        .unwrap();
    assert_eq!(ack, Some(Delivery::Acked(77)));
    stop_hub(hub, stop).await;
}

/// A wrong password is reported as refused credentials, not as a network
/// problem, and the session keeps retrying.
#[tokio::test]
async fn a_wrong_password_is_reported_as_such() {
    let broker = broker_with_dev1();
    let cfg = plain_config(&broker, "wrong", &broker.ca_pem_path());
    let (hub, stop) = start(&cfg, Router::new());
    let mut status = hub.handle.watch_status();
    let s = wait_for(&mut status, "auth failure", |s| s.last_failure.is_some()).await;
    assert_eq!(s.state, ConnState::Disconnected);
    assert_eq!(s.last_failure, Some(Failure::Auth));
    let msg = s.last_error.unwrap();
    assert!(msg.contains("refused the credentials"), "{msg}");
    assert!(!msg.contains("wrong"), "the password leaked: {msg}");
    stop_hub(hub, stop).await;
}

/// A broker whose certificate is not signed by a trusted CA is refused
/// with a TLS error that says so.
#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let broker = broker_with_dev1();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, untrusted_ca_pem()).unwrap();
    let cfg = plain_config(&broker, "s3cret", &other);
    let (hub, stop) = start(&cfg, Router::new());
    let mut status = hub.handle.watch_status();
    let s = wait_for(&mut status, "tls failure", |s| s.last_failure.is_some()).await;
    assert_eq!(s.last_failure, Some(Failure::Tls), "{:?}", s.last_error);
    assert!(s.last_error.unwrap().contains("TLS with localhost"));
    stop_hub(hub, stop).await;
}

/// Killing the broker drops the session; it reports the loss of in-flight
/// messages and reconnects by itself once the broker is back.
#[tokio::test]
async fn reconnects_after_the_broker_is_killed_and_restarted() {
    let mut broker = broker_with_dev1();
    let cfg = plain_config(&broker, "s3cret", &broker.ca_pem_path());
    let (mut hub, stop) = start(&cfg, Router::new());
    let mut status = hub.handle.watch_status();
    support::connected(&hub).await;
    assert_eq!(hub.deliveries.recv().await, Some(Delivery::Connected(1)));

    broker.kill();
    wait_for(&mut status, "disconnected", |s| {
        s.state == ConnState::Disconnected
    })
    .await;
    assert_eq!(hub.deliveries.recv().await, Some(Delivery::InFlightLost));
    broker.restart();
    let s = wait_for(&mut status, "reconnected", |s| {
        s.is_connected() && s.connects == 2
    })
    .await;
    assert!(s.disconnects >= 1);
    assert_eq!(hub.deliveries.recv().await, Some(Delivery::Connected(2)));
    stop_hub(hub, stop).await;
}

/// A method call published by the cloud is routed by name and answered on
/// the response topic with the same `$rid` and the handler's status.
#[tokio::test]
async fn a_method_call_round_trips() {
    let (_broker, hub, stop, mut cloud) = echo_device_and_cloud().await;

    let res = cloud
        .call("dev1", "Echo", "42", r#"{"hello":1}"#, WAIT)
        .await
        .unwrap();
    assert_eq!(res.topic, "devices/dev1/methods/res/200/?$rid=42");
    assert_eq!(
        serde_json::from_slice::<Value>(&res.payload).unwrap(),
        json!({"hello": 1})
    );
    stop_hub(hub, stop).await;
}

/// An unknown method gets a 404 answer, never silence.
#[tokio::test]
async fn an_unknown_method_gets_404() {
    let (_broker, hub, stop, mut cloud) = echo_device_and_cloud().await;

    let res = cloud.call("dev1", "Reboot", "7", "{}", WAIT).await.unwrap();
    assert_eq!(res.topic, "devices/dev1/methods/res/404/?$rid=7");
    let body: Value = serde_json::from_slice(&res.payload).unwrap();
    assert_eq!(body["error"], "unknown method");
    stop_hub(hub, stop).await;
}

/// On a clean stop the presence document says offline (a clean DISCONNECT
/// suppresses the Last Will, so tether publishes it itself).
#[tokio::test]
async fn a_clean_stop_leaves_the_device_marked_offline() {
    let broker = broker_with_dev1();
    let cfg = plain_config(&broker, "s3cret", &broker.ca_pem_path());
    let (hub, stop) = start(&cfg, Router::new());
    support::connected(&hub).await;
    stop.cancel();
    hub.task.await.unwrap();
    // A new subscriber sees the retained presence document.
    let mut cloud = tether_testkit::cloud(broker.plain_port(), &["devices/dev1/status"]).await;
    let p = cloud.next_on("devices/dev1/status", WAIT).await.unwrap();
    let doc: Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(doc["online"], false);
}

/// Reported properties go out retained on a plain broker, merged.
#[tokio::test]
async fn reported_properties_are_retained_and_merged() {
    let broker = broker_with_dev1();
    let cfg = plain_config(&broker, "s3cret", &broker.ca_pem_path());
    let (hub, stop) = start(&cfg, Router::new());
    support::connected(&hub).await;
    let patch = json!({"attributes": {"1": "true"}, "site": "B2"});
    hub.handle
        .report(patch.as_object().unwrap().clone())
        .await
        .unwrap();
    let patch = json!({"site": null});
    hub.handle
        .report(patch.as_object().unwrap().clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cloud =
        tether_testkit::cloud(broker.plain_port(), &["devices/dev1/twin/reported"]).await;
    let p = cloud
        .next_on("devices/dev1/twin/reported", WAIT)
        .await
        .unwrap();
    assert!(p.retain);
    let doc: Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(doc, json!({"attributes": {"1": "true"}}));
    stop_hub(hub, stop).await;
}

/// MQTT over WebSocket for sites that only let HTTP(S) out.
#[tokio::test]
async fn connects_over_websocket() {
    let broker = Broker::start(
        BrokerOptions::new()
            .user("dev1", "s3cret")
            .plain_anonymous(false)
            .websockets(true),
    );
    let text = format!(
        r#"
        [hub]
        url = "ws://localhost:{port}/mqtt"
        allow_insecure = true
        device_id = "dev1"
        username = "dev1"
        password = "s3cret"
        keep_alive = "5s"
        "#,
        port = broker.ws_port().expect("websockets listener"),
    );
    let cfg = crate::config::parse(&text, broker.dir()).expect("valid config");
    let (hub, stop) = start(&cfg, Router::new());
    let mut status = hub.handle.watch_status();
    wait_for(
        &mut status,
        "connected over websocket",
        HubStatus::is_connected,
    )
    .await;
    stop_hub(hub, stop).await;
}

/// Two agents with one device id kick each other off; the session says
/// that another client is probably using the same id.
#[tokio::test]
async fn a_duplicate_device_id_is_named_as_the_likely_cause() {
    let broker = broker_with_dev1();
    let cfg = plain_config(&broker, "s3cret", &broker.ca_pem_path());
    let (a, stop_a) = start(&cfg, Router::new());
    let (b, stop_b) = start(&cfg, Router::new());
    let mut sa = a.handle.watch_status();
    let mut sb = b.handle.watch_status();
    let hint = |s: &HubStatus| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("another client is probably connected"))
    };
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            r = sa.wait_for(hint) => r.is_ok(),
            r = sb.wait_for(hint) => r.is_ok(),
        }
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "a: {:?}\nb: {:?}",
        a.handle.status(),
        b.handle.status()
    );
    stop_a.cancel();
    stop_b.cancel();
    a.task.await.unwrap();
    b.task.await.unwrap();
}

/// Cloud-to-device messages reach the handler registered for their `type`
/// property with the decoded properties and body.
#[tokio::test]
async fn c2d_messages_are_routed_by_type() {
    let broker = broker_with_dev1();
    let cfg = plain_config(&broker, "s3cret", &broker.ca_pem_path());
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let mut router = Router::new();
    router.c2d("setAttribute", move |m: C2dMessage| {
        let tx = tx.clone();
        async move { tx.send(m).await.map_err(|e| e.to_string()) }
    });
    let (hub, stop) = start(&cfg, router);
    support::subscribed(&hub).await;
    let cloud = tether_testkit::cloud(broker.plain_port(), &[]).await;
    cloud
        .publish(
            "devices/dev1/messages/devicebound/%24.mid=m1&type=ping",
            "ignored",
            false,
        )
        .await
        .expect("publish");
    cloud
        .publish(
            "devices/dev1/messages/devicebound/%24.mid=m2&type=setAttribute",
            r#"{"attributeId":1,"value":"true"}"#,
            false,
        )
        .await
        .expect("publish");
    let m = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        tether_protocol::properties::get(&m.properties, "$.mid"),
        Some("m2")
    );
    assert_eq!(&m.payload[..], br#"{"attributeId":1,"value":"true"}"#);
    stop_hub(hub, stop).await;
}

/// `hub.proxy`: the TLS connection is tunnelled through an HTTP CONNECT
/// proxy (sites that only let HTTPS out through a proxy).
#[tokio::test]
async fn connects_through_an_http_connect_proxy() {
    let broker = broker_with_dev1();
    let (proxy_port, tunnels) = connect_proxy().await;
    let mut cfg = plain_config(&broker, "s3cret", &broker.ca_pem_path());
    cfg.hub.proxy = Some(format!("http://127.0.0.1:{proxy_port}"));
    let (hub, stop) = start(&cfg, Router::new());
    let mut status = hub.handle.watch_status();
    wait_for(
        &mut status,
        "connected through the proxy",
        HubStatus::is_connected,
    )
    .await;
    let target = tunnels.lock().unwrap().first().cloned();
    assert_eq!(target, Some(format!("localhost:{}", broker.tls_port())));
    stop_hub(hub, stop).await;
}

/// A minimal HTTP CONNECT proxy; records each tunnel's target.
async fn connect_proxy() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let Some(target) = head
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split_whitespace().next())
                else {
                    return;
                };
                record.lock().unwrap().push(target.to_string());
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, seen)
}
