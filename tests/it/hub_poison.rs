//! Poison inbound messages (issue 16) queued for the real binary's
//! persistent session while it was down, against a real Mosquitto that
//! accepts any size (`message_size_limit 0`): each costs only itself, and
//! the oversize payload is never buffered. The hub session's own poison
//! tests (one message at a time, bursts, quick drops) are in-crate
//! (`src/hub/tests/poison.rs`).

use std::time::Duration;

use crate::outbox_rig::{
    client, daemon_config, post_attributes, wait_healthy, Subscriber, Tether, EVENTS,
};
use serde_json::{json, Value};
use tether_testkit::poison::{big_json, poison_broker, publish_big};

/// Larger than tether's 264 KiB packet limit.
const OVERSIZE: usize = 300 * 1024;
const METHODS: &str = "devices/dev1/methods/POST";
const ANSWERS: &str = "devices/dev1/methods/res/";
/// How long the test waits for a method answer.
const WAIT: Duration = Duration::from_secs(10);

/// The real binary, with poison queued for its persistent session while it
/// was down: a 64 MiB method call, a garbage method payload, an oversize C2D
/// message and an oversize retained desired document. On its next start it
/// connects once, answers the calls (413 and 400, in the Cloud Relay shape),
/// counts the refusals, delivers the attribute messages it accepts, and its
/// peak RSS stays far below the size of the call it refused.
#[tokio::test]
async fn poison_queued_for_the_device_costs_nothing_upstream() {
    let broker = poison_broker();
    let port = broker.plain_port();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log, addr) = daemon_config(dir.path(), port);
    let http = client();
    // A first run creates the device's persistent session (and gives the
    // peak RSS of a healthy, idle tether); then it is gone, SIGKILLed.
    let mut first = Tether::start(&cfg, &log);
    wait_healthy(&http, addr).await;
    let idle_peak = peak_rss_kib(first.child.id());
    first.kill();

    let mut answers = tether_testkit::cloud(port, &[&format!("{ANSWERS}#")]).await;
    let call = format!("{METHODS}/RestApi/?$rid=1");
    publish_big(port, &call, big_json(64 << 20), false).await;
    let cloud = tether_testkit::cloud(port, &[]).await;
    let garbage = b"\x00\xffgarbage".to_vec();
    cloud
        .publish(&format!("{METHODS}/RestApi/?$rid=2"), garbage, false)
        .await
        .expect("publish");
    let c2d = "devices/dev1/messages/devicebound/type=setAttribute";
    cloud
        .publish(c2d, big_json(OVERSIZE), false)
        .await
        .expect("publish");
    publish_big(port, "devices/dev1/twin/desired", big_json(OVERSIZE), true).await;

    let mut sub = Subscriber::connect(port, &format!("{EVENTS}#")).await;
    let tether = Tether::start(&cfg, &log);
    wait_healthy(&http, addr).await;
    let ids = post_attributes(&http, addr, 20).await;
    sub.until_all(&ids, Duration::from_secs(30)).await;

    let mut got = Vec::new();
    for _ in 0..2 {
        let Some(a) = answers.next_on(ANSWERS, WAIT).await.ok() else {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("no method answer within {WAIT:?}; got {got:?}; tether log:\n{text}");
        };
        let body: Value = serde_json::from_slice(&a.payload).expect("JSON answer");
        got.push((a.topic, body["status"].clone()));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            (format!("{ANSWERS}400/?$rid=2"), json!(400)),
            (format!("{ANSWERS}413/?$rid=1"), json!(413)),
        ]
    );
    // The desired document twice: queued for the session, then again as the
    // retained message when tether renews its subscriptions.
    let too_large = "tether_hub_inbound_refused_total{reason=\"too_large\"} 4";
    let metrics = metrics_until(&http, addr, too_large).await;
    assert!(metrics.contains("tether_hub_inbound_refused_total{reason=\"not_json\"} 0"));
    let health: Value = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["hub"]["connects"], 1, "{health}");
    assert_eq!(health["hub"]["disconnects"], 0, "{health}");
    let text = std::fs::read_to_string(&log).unwrap();
    let refusals: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("refused an inbound"))
        .collect();
    assert_eq!(refusals.len(), 4, "logged once each: {refusals:#?}");
    assert!(!text.contains("xxxxxxxx"), "a payload reached the log");

    let peak = peak_rss_kib(tether.child.id());
    eprintln!("tether peak RSS: {idle_peak} KiB idle, {peak} KiB after refusing a 64 MiB call");
    assert!(
        peak < idle_peak + 32 * 1024,
        "peak RSS {peak} KiB (idle {idle_peak} KiB): the oversize call was buffered"
    );
}

/// `/metrics` once it contains `needle`.
async fn metrics_until(http: &reqwest::Client, addr: std::net::SocketAddr, needle: &str) -> String {
    let mut text = String::new();
    for _ in 0..200 {
        text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/metrics never showed {needle}:\n{text}");
}

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}
