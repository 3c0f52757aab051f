//! Never abandoning a store, with the real binary and real files: tether
//! killed any number of times while it opens its store still delivers the
//! whole backlog afterwards, and nothing is set aside.
//! `TETHER_CHAOS_LONG=1` kills 600 times instead of 150.

mod outbox_rig;
mod support;

mod chaos_rig;

use std::net::SocketAddr;
use std::time::Duration;

use chaos_rig::{long, tally, wait_drained};
use outbox_rig::{client, daemon_config, wait_healthy, Subscriber, Tether, EVENTS, TOKEN};
use rand::Rng;
use serde_json::{json, Value};
use support::{Broker, BrokerOptions};

/// Waits until the admin API answers (the hub may be down).
async fn wait_up(http: &reqwest::Client, addr: SocketAddr) {
    for _ in 0..200 {
        if !chaos_rig::health(http, addr).await.is_null() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tether's admin API never answered at {addr}");
}

/// Posts `n` attribute changes, 100 per request; returns the accepted ids.
async fn queue(http: &reqwest::Client, addr: SocketAddr, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let batch: Vec<Value> = (0..100.min(n - ids.len()))
            .map(|i| json!({"attributeId": i, "value": ids.len(), "attributeDataType": "SINT32"}))
            .collect();
        let r = http
            .post(format!("http://{addr}/v1/attributes"))
            .bearer_auth(TOKEN)
            .json(&batch)
            .send()
            .await
            .expect("tether answers");
        assert_eq!(r.status().as_u16(), 202);
        let body: Value = r.json().await.unwrap();
        ids.extend(
            body["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string()),
        );
    }
    ids
}

/// The reproduction: a backlog queued with the broker down, then
/// tether SIGKILLed at random moments in its first 80 ms, many times: the
/// store is never set aside and every message is delivered afterwards.
#[tokio::test]
async fn killed_any_number_of_times_while_opening_the_backlog_is_delivered() {
    let kills = if long() { 600 } else { 150 };
    let mut broker = Broker::start(BrokerOptions::new());
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log, addr) = daemon_config(dir.path(), broker.plain_port());
    let http = client();
    broker.kill();
    let mut tether = Tether::start(&cfg, &log);
    wait_up(&http, addr).await;
    let accepted = queue(&http, addr, 5000).await;
    tether.kill();
    let mut rng = rand::thread_rng();
    for _ in 0..kills {
        let mut t = Tether::start(&cfg, &log);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..80)));
        t.kill();
    }
    broker.restart();
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let _tether = Tether::start(&cfg, &log);
    let health = wait_healthy(&http, addr).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail = text.lines().rev().take(30).collect::<Vec<_>>().join("\n");
    assert!(
        wait_drained(&http, addr, Duration::from_secs(60)).await,
        "drained; log tail:\n{tail}"
    );
    let t = tally(&mut sub, &accepted, Duration::from_secs(30)).await;
    t.report("SIGKILL while opening", kills);
    assert_eq!(t.lost, 0, "{t:?}\n{tail}");
    assert!(!text.contains("moved aside"), "nothing set aside:\n{tail}");
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("store"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("outbox.corrupt-")
        })
        .collect();
    assert!(aside.is_empty(), "{aside:?}");
    assert!(
        health["components"]["outbox"]["details"]["storeLoss"].is_null(),
        "{health}"
    );
}
