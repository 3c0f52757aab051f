//! The real binary: SIGKILLed under load and restarted, every accepted
//! message is delivered (duplicates allowed, same id); a corrupt store is
//! moved aside at start and a new one used.

use crate::outbox_rig;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::outbox_rig::{client, daemon_config, wait_healthy, Subscriber, Tether, EVENTS, TOKEN};
use serde_json::{json, Value};
use tether_testkit::{Broker, BrokerOptions};

fn setup(broker: &Broker) -> (tempfile::TempDir, PathBuf, PathBuf, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log, addr) = daemon_config(dir.path(), broker.plain_port());
    (dir, cfg, log, addr)
}

/// Load from 4 HTTP clients; tether is SIGKILLed mid-load and restarted.
/// Every id answered with 202 reaches the broker.
#[tokio::test]
async fn sigkill_under_load_loses_no_accepted_message() {
    // No broker persistence (it saves on every message, ~150/s); an
    // unlimited queue for the subscriber: mosquitto's default (1000) would
    // drop messages on the cloud side when the test's reader lags.
    let broker = Broker::start(BrokerOptions::new().extra_config("max_queued_messages 0"));
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let (_dir, cfg, log, addr) = setup(&broker);
    let http = client();
    let mut tether = Tether::start(&cfg, &log);
    wait_healthy(&http, addr).await;

    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut load = Vec::new();
    for c in 0..4 {
        let (http, accepted, stop) = (http.clone(), accepted.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.is_cancelled() {
                let batch: Vec<Value> = (0..20)
                    .map(|i| json!({"attributeId": c * 100 + i, "value": n, "attributeDataType": "SINT32"}))
                    .collect();
                n += 1;
                let sent = http
                    .post(format!("http://{addr}/v1/attributes"))
                    .bearer_auth(TOKEN)
                    .json(&batch)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let body: Value = r.json().await.unwrap_or_default();
                        let ids = body["ids"].as_array().cloned().unwrap_or_default();
                        accepted
                            .lock()
                            .unwrap()
                            .extend(ids.iter().filter_map(|v| v.as_str().map(str::to_string)));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tether.kill();
    let at_kill = accepted.lock().unwrap().len();
    let mut tether = Tether::start(&cfg, &log);
    wait_healthy(&http, addr).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.cancel();
    for l in load {
        l.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        at_kill > 100 && accepted.len() > at_kill,
        "load ran on both sides of the kill"
    );
    let mut drained = false;
    let mut stats = Value::Null;
    for _ in 0..300 {
        if let Ok(r) = http
            .get(format!("http://{addr}/v1/outbox/stats"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            stats = r.json().await.unwrap_or_default();
            if stats["sinks"][0]["depth"] == 0 {
                drained = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: String = text.lines().rev().take(60).collect::<Vec<_>>().join("\n");
    if !drained {
        let blog = broker.log();
        let btail: Vec<&str> = blog.lines().filter(|l| l.contains("dev1")).collect();
        let btail = btail[btail.len().saturating_sub(40)..].join("\n");
        panic!("tether did not drain: {stats}\n{tail}\nbroker:\n{btail}");
    }
    let seen = sub.until_all(&accepted, Duration::from_secs(30)).await;
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in &seen {
        *counts.entry(id).or_default() += 1;
    }
    let dups: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "accepted {}, before the kill {at_kill}, delivered {} publishes, duplicates {dups}",
        accepted.len(),
        seen.len()
    );
    tether.kill();
}

/// A store the engine cannot open is moved aside with a log line and a new one
/// is used; the old one stays for inspection.
#[tokio::test]
async fn a_corrupt_store_is_moved_aside_and_a_new_one_started() {
    let broker = Broker::start(BrokerOptions::new());
    let (dir, cfg, log, addr) = setup(&broker);
    let store = dir.path().join("store").join("outbox");
    std::fs::create_dir_all(&store).unwrap();
    // A damaged store of the engine the rig configures.
    if outbox_rig::raw::test_engine() == "sled" {
        std::fs::write(
            store.join("conf"),
            b"segment_size: 524288\nuse_compression: false\nversion: 0.34\n",
        )
        .unwrap();
    }
    let file = outbox_rig::raw::test_engine_file();
    std::fs::write(store.join(file), vec![0xA5u8; 600_000]).unwrap();
    let http = client();
    let _tether = Tether::start(&cfg, &log);
    let health = wait_healthy(&http, addr).await;
    assert_eq!(health["components"]["outbox"]["ok"], true, "{health}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("moved aside"), "{text}");
    let aside = outbox_rig::set_aside(&dir.path().join("store"));
    assert_eq!(aside.len(), 1, "{text}");
    assert!(aside[0].join(file).exists(), "the old store is kept");
    let r = http
        .post(format!("http://{addr}/v1/attributes"))
        .bearer_auth(TOKEN)
        .json(&json!({"attributeId": 1, "value": 1, "attributeDataType": "SINT8"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}
