//! Several `serve` instances on one broker (behind a load balancer) each
//! get exactly their own answers: UUID `$rid`s, a shared
//! `devices/+/methods/res/#` subscription, foreign answers dropped.

use crate::cloud_support;

use std::sync::Arc;

use crate::cloud_support::{plain_broker, FakeDevice, Serve};
use tether_testkit::{Broker, BrokerOptions};

/// The device echoes each call's path; 20 concurrent calls through each
/// of two instances all come back with their own path and status.
#[tokio::test]
async fn two_instances_each_get_only_their_own_answers() {
    let broker = Broker::start(BrokerOptions::new());
    let echo = Arc::new(|payload: &[u8]| {
        let req: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let path = req["path"].as_str()?.to_string();
        let status = if path.ends_with("/7") { 404 } else { 200 };
        let answer = serde_json::json!({"status": status, "headers": {"Content-Type": "text/plain"}, "body": path});
        Some((status, answer.to_string().into_bytes()))
    });
    let _device = FakeDevice::start(broker.plain_port(), "dev1", echo).await;
    let a = Serve::start(plain_broker(broker.plain_port()), |_| {}).await;
    let b = Serve::start(plain_broker(broker.plain_port()), |_| {}).await;
    a.wait_online("dev1").await;
    b.wait_online("dev1").await;

    let mut calls = tokio::task::JoinSet::new();
    for (name, serve) in [("a", &a), ("b", &b)] {
        for i in 0..20 {
            let path = format!("/{name}/{i}");
            let req = serve
                .http
                .get(serve.url("dev1", ""))
                .header("Remote-Query", &path);
            calls.spawn(async move {
                let resp = req.send().await.unwrap();
                (path, resp.status().as_u16(), resp.text().await.unwrap())
            });
        }
    }
    let results = tokio::time::timeout(cloud_support::WAIT, calls.join_all())
        .await
        .expect("all answers within 10 s");
    assert_eq!(results.len(), 40);
    for (path, status, body) in results {
        assert_eq!(body, path);
        assert_eq!(
            status,
            if path.ends_with("/7") { 404 } else { 200 },
            "{path}"
        );
    }
}
