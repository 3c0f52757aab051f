//! Throughput and memory of the real binary against a local Mosquitto, for
//! the numbers the outbox issue asks for. Ignored by default (minutes, and
//! only meaningful in release):
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-outbox cargo test --release --test outbox_throughput -- --ignored --nocapture
//! ```
//!
//! 1. Sustained: 8 HTTP clients post batches of 100 attribute changes;
//!    accepted/s (202 = on disk) and accepted→PUBACKed/s.
//! 2. Outage: the same load with the broker stopped, then the broker
//!    restarted and the backlog's drain rate measured.
//!
//! RSS (VmRSS, peak VmHWM) of the tether process is sampled throughout.

mod outbox_rig;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outbox_rig::{client, config_text, free_addr, wait_healthy, Tether, TOKEN};
use serde_json::{json, Value};
use support::{Broker, BrokerOptions};

const TOTAL: u64 = 100_000;
const BATCH: u64 = 100;
const CLIENTS: u64 = 8;

fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn stats(http: &reqwest::Client, addr: std::net::SocketAddr) -> Value {
    http.get(format!("http://{addr}/v1/outbox/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Posts TOTAL messages from CLIENTS clients; returns the elapsed time.
async fn load(http: &reqwest::Client, addr: std::net::SocketAddr) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, next) = (http.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(BATCH, Ordering::SeqCst) < TOTAL {
                let batch: Vec<Value> = (0..BATCH)
                    .map(|i| json!({"attributeId": c * 1000 + i, "value": i as i32, "attributeDataType": "SINT32"}))
                    .collect();
                let r = http
                    .post(format!("http://{addr}/v1/attributes"))
                    .bearer_auth(TOKEN)
                    .json(&batch)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

async fn wait_delivered(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    pid: u32,
    n: u64,
    peak: &mut u64,
) -> Duration {
    let start = Instant::now();
    loop {
        let s = stats(http, addr).await;
        *peak = (*peak).max(rss_kib(pid).0);
        if s["sinks"][0]["delivered"].as_u64().unwrap_or(0) >= n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "not delivered: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn throughput_and_backlog_drain() {
    let mut broker = Broker::start(BrokerOptions::new());
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let cfg = dir.path().join("tether.toml");
    std::fs::write(
        &cfg,
        config_text(broker.plain_port(), dir.path(), "", Some(addr)),
    )
    .unwrap();
    let http = client();
    let tether = Tether::start(&cfg, &dir.path().join("tether.log"));
    let pid = tether.child.id();
    wait_healthy(&http, addr).await;
    let idle = rss_kib(pid).0;

    let mut peak = 0;
    let sampler_stop = Arc::new(AtomicU64::new(0));
    let sampled = Arc::new(AtomicU64::new(0));
    let (s2, m2) = (sampler_stop.clone(), sampled.clone());
    let sampler = tokio::spawn(async move {
        while s2.load(Ordering::SeqCst) == 0 {
            m2.fetch_max(rss_kib(pid).0, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let start = Instant::now();
    let took = load(&http, addr).await;
    wait_delivered(&http, addr, pid, TOTAL, &mut peak).await;
    let end_to_end = start.elapsed();
    let rss_live = sampled.swap(0, Ordering::SeqCst).max(peak);
    println!(
        "sustained: {TOTAL} accepted in {took:.2?} = {:.0}/s accepted; all PUBACKed after {end_to_end:.2?} = {:.0}/s accepted->PUBACKed; RSS idle {idle} KiB, max {rss_live} KiB",
        TOTAL as f64 / took.as_secs_f64(),
        TOTAL as f64 / end_to_end.as_secs_f64()
    );

    broker.stop();
    let took = load(&http, addr).await;
    let s = stats(&http, addr).await;
    let rss_backlog = sampled.swap(0, Ordering::SeqCst);
    println!(
        "broker down: {TOTAL} accepted in {took:.2?} = {:.0}/s; backlog {} messages, {} bytes, disk {} bytes; RSS max {rss_backlog} KiB",
        TOTAL as f64 / took.as_secs_f64(),
        s["sinks"][0]["depth"],
        s["sinks"][0]["bytes"],
        s["diskBytes"],
    );
    broker.restart();
    let mut peak = 0;
    let drain = wait_delivered(&http, addr, pid, 2 * TOTAL, &mut peak).await;
    sampler_stop.store(1, Ordering::SeqCst);
    sampler.await.unwrap();
    let rss_drain = sampled.load(Ordering::SeqCst).max(peak);
    let (_, hwm) = rss_kib(pid);
    println!(
        "backlog drain: {TOTAL} messages PUBACKed in {drain:.2?} (includes reconnect backoff) = {:.0}/s; RSS max {rss_drain} KiB, VmHWM {hwm} KiB",
        TOTAL as f64 / drain.as_secs_f64()
    );
    let s = stats(&http, addr).await;
    println!("final stats: {s}");
}
