//! A webhook sink over HTTPS with a private CA, Basic auth, custom headers
//! and query parameters: it fails, then recovers and receives everything in
//! order, while the hub is served without waiting for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::outbox_rig::{Rig, RigOptions, Subscriber, EVENTS};
use base64::Engine as _;
use serde_json::Value;
use tether_testkit::http::{Reply, Server};
use tether_testkit::{Broker, BrokerOptions, TestCa};

#[tokio::test]
async fn a_failing_webhook_recovers_without_delaying_the_hub() {
    let broker = Broker::start(BrokerOptions::new());
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let ca = TestCa::new("webhook test CA");
    let cert = ca.issue_server(&["127.0.0.1", "localhost"]);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = Server::start_tls(&cert.cert_pem, &cert.key_pem, move |_req| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                Reply::new(503, "busy")
            } else {
                Reply::new(200, "")
            }
        }
    })
    .await
    .expect("start the HTTP server on 127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let hook = format!(
        "[[webhook]]\nname = \"partner\"\nurl = \"{}/notify\"\nusername = \"afero\"\n\
         password = \"s3cret\"\nca_file = \"{}\"\ntimeout = \"5s\"\n\
         [webhook.headers]\nX-Partner = \"tether\"\n[webhook.query]\nkey = \"a b\"\n",
        server.base_url().replace("127.0.0.1", "localhost"),
        ca_file.display()
    );
    let rig = Rig::start(
        broker.plain_port(),
        RigOptions {
            sections: hook,
            ..Default::default()
        },
    )
    .await;
    let ids = rig.submit(5, 5).await;
    sub.until_all(&ids, Duration::from_secs(10)).await;
    let s = rig
        .wait_stats("the hub is not held back", Duration::from_secs(2), |s| {
            s.sinks[0].delivered == 5
        })
        .await;
    assert_eq!(s.sinks[1].delivered, 0, "{s:?}");
    rig.wait_stats("the webhook failing", Duration::from_secs(5), |s| {
        s.sinks[1].last_error.as_deref() == Some("503 Service Unavailable")
    })
    .await;

    let s = rig
        .wait_stats("webhook caught up", Duration::from_secs(15), |s| {
            s.sinks[1].delivered == 5 && s.messages == 0
        })
        .await;
    assert_eq!((s.messages, s.sinks[1].duplicates), (0, 2), "{s:?}");
    let reqs = server.requests();
    let ok: Vec<_> = reqs.iter().skip(2).collect();
    let got: Vec<String> = ok
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, ids, "in order, once each after recovery");
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/notify?key=a+b");
    assert_eq!(r.header("x-partner"), Some("tether"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let basic = base64::engine::general_purpose::STANDARD.encode("afero:s3cret");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
}
