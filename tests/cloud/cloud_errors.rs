//! `tether-cloud serve`'s error table (cloud-relay.md §4) against a real
//! Mosquitto, with scripted devices on the plain-broker topic scheme.

use crate::cloud_support;

use std::sync::Arc;
use std::time::Duration;

use crate::cloud_support::{answering, plain_broker, problem, set_presence, FakeDevice, Serve};
use tether_testkit::{Broker, BrokerOptions};
use tokio::time::Instant;

/// A device with no presence at all, and one whose retained presence
/// says offline, are both answered 1000/404 at once, not after the
/// response timeout.
#[tokio::test]
async fn devices_not_connected_are_answered_404_at_once() {
    let broker = Broker::start(BrokerOptions::new());
    set_presence(broker.plain_port(), "gone", Some(false)).await;
    let serve = Serve::start(plain_broker(broker.plain_port()), |_| {}).await;
    assert!(serve.handle.broker_ready(cloud_support::WAIT).await);
    for device in ["never-seen", "gone"] {
        let started = Instant::now();
        let body = problem(serve.get(device, "/api/rest/v1/info").await, 404).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{device}: {:?}",
            started.elapsed()
        );
        assert_eq!(body["errorCode"], 1000);
        assert_eq!(body["title"], "Not Found");
        assert_eq!(
            body["detail"],
            format!("Reference '{device}' does not exist")
        );
        assert!(body["instance"].is_null());
    }
}

/// A device online per its retained status that never answers gets
/// 1001/504 after `responseTimeout` (here 1 s: the test lowers the clamp).
#[tokio::test]
async fn a_silent_device_times_out_with_504() {
    let broker = Broker::start(BrokerOptions::new());
    set_presence(broker.plain_port(), "ghost", Some(true)).await;
    let serve = Serve::start(plain_broker(broker.plain_port()), |c| {
        c.response_timeout_bounds.0 = Duration::from_secs(1);
    })
    .await;
    serve.wait_online("ghost").await;
    let started = Instant::now();
    let resp = serve
        .http
        .get(serve.url("ghost", "responseTimeout=1"))
        .header("Remote-Query", "/api/rest/v1/info")
        .send()
        .await
        .unwrap();
    let body = problem(resp, 504).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(body["errorCode"], 1001);
    assert_eq!(body["detail"], "Operation error or timeout");
}

/// Answers that are not a JSON object, or carry a non-integer status,
/// are 1002/502; an answer over 128 KiB is 1003/502.
#[tokio::test]
async fn invalid_and_oversized_answers_are_502() {
    let broker = Broker::start(BrokerOptions::new());
    let port = broker.plain_port();
    let _array =
        FakeDevice::start(port, "array", Arc::new(|_| Some((200, b"[1,2]".to_vec())))).await;
    let _bad_status = FakeDevice::start(
        port,
        "badstatus",
        Arc::new(|_| Some((200, br#"{"status":"abc"}"#.to_vec()))),
    )
    .await;
    let big = serde_json::json!({"status": 200, "body": "x".repeat(200 * 1024)}).to_string();
    let _big = FakeDevice::start(
        port,
        "big",
        Arc::new(move |_| Some((200, big.clone().into_bytes()))),
    )
    .await;
    let serve = Serve::start(plain_broker(port), |_| {}).await;
    for device in ["array", "badstatus", "big"] {
        serve.wait_online(device).await;
    }
    for device in ["array", "badstatus"] {
        let body = problem(serve.get(device, "/x").await, 502).await;
        assert_eq!(body["errorCode"], 1002, "{device}");
        assert_eq!(body["detail"], "Invalid result");
    }
    let body = problem(serve.get("big", "/x").await, 502).await;
    assert_eq!(body["errorCode"], 1003);
    assert_eq!(body["detail"], "Message too large");
}

/// With the broker unreachable every call is 5000/503, quickly.
#[tokio::test]
async fn an_unreachable_broker_is_503() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let serve = Serve::start(plain_broker(port), |_| {}).await;
    let started = Instant::now();
    let body = problem(serve.get("dev1", "/x").await, 503).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(body["errorCode"], 5000);
    let health = serve
        .http
        .get(format!("{}/healthz", serve.handle.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
}

/// Request validation happens before the device is called: a missing
/// `Remote-Query` is ASP.NET's validation problem, a non-integer
/// `responseTimeout` is 100/400, and other HTTP methods are 405.
#[tokio::test]
async fn malformed_requests_are_refused_before_the_device() {
    let broker = Broker::start(BrokerOptions::new());
    let device = FakeDevice::start(
        broker.plain_port(),
        "dev1",
        answering(200, "text/plain", "hi"),
    )
    .await;
    let serve = Serve::start(plain_broker(broker.plain_port()), |_| {}).await;
    serve.wait_online("dev1").await;
    let resp = serve.http.get(serve.url("dev1", "")).send().await.unwrap();
    let body = problem(resp, 400).await;
    assert!(body["errors"]["Remote-Query"].is_array(), "{body}");
    let resp = serve
        .http
        .get(serve.url("dev1", "responseTimeout=soon"))
        .header("Remote-Query", "/x")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp, 400).await["errorCode"], 100);
    let resp = serve
        .http
        .patch(serve.url("dev1", ""))
        .header("Remote-Query", "/x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let ok = serve.get("dev1", "/x").await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "hi");
    drop(device);
}
