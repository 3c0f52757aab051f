//! Relay latency: a relayed GET (cloud client → Mosquitto → tether → local
//! HTTP server → back) against a direct HTTP GET to the same server, in the
//! same run, so the difference is tether's added latency. tether is the
//! daemon as `tether run` starts it (`tether::app::Daemon`, in this
//! process), from a config.
//!
//! `cargo bench -p tether --bench relay_latency [-- CALLS]` (default 1,000 calls each).
//! Needs mosquitto on PATH. Prints a table and one JSON line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether::app::Daemon;
use tether::clock::SystemClock;
use tether_demo::observer::Observer;
use tether_testkit::http::{eclypse, ECLYPSE_PASSWORD, ECLYPSE_USER};
use tether_testkit::{Broker, BrokerOptions};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const ADMIN_TOKEN: &str = "relay-latency-admin";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    tether::tls::install_crypto_provider();
    // Like production brokers, answer small packets at once (no Nagle delay).
    let broker = Broker::start(
        BrokerOptions::new()
            .user("dev1", "pw")
            .extra_config("set_tcp_nodelay true"),
    );
    let controller = eclypse().await;
    let state = tempfile::tempdir().expect("a state directory");
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let text = format!(
        r#"
        [hub]
        url = "mqtts://localhost:{port}"
        device_id = "dev1"
        username = "dev1"
        password = "pw"
        ca_file = "{ca}"
        [controller]
        base_url = "{base}"
        username = "{ECLYPSE_USER}"
        password = "{ECLYPSE_PASSWORD}"
        [store]
        path = "{store}"
        [admin]
        listen = "127.0.0.1:{admin}"
        token = "{ADMIN_TOKEN}"
        "#,
        port = broker.tls_port(),
        ca = broker.ca_pem_path().display(),
        base = controller.base_url(),
        store = state.path().display(),
    );
    let cfg = tether::config::parse(&text, broker.dir()).expect("valid config");
    let stop = CancellationToken::new();
    let daemon = Daemon::new(state.path().join("tether.toml"), Arc::new(SystemClock));
    let run = tokio::spawn(daemon.run_until(cfg, stop.clone()));
    wait_subscribed(admin).await;
    let mut cloud =
        tether_testkit::cloud(broker.plain_port(), &["devices/dev1/methods/res/#"]).await;

    let direct_client = reqwest::Client::new();
    let url = format!("{}/api/rest/v1/info", controller.base_url());
    let call = json!({"path": "/api/rest/v1/info", "method": "GET"}).to_string();

    // Warm both paths (connection pools, TLS sessions).
    for i in 0..50 {
        relayed(&mut cloud, &call, i).await;
        direct(&direct_client, &url).await;
    }
    let mut relay_us = Vec::with_capacity(calls);
    let mut direct_us = Vec::with_capacity(calls);
    // Interleaved, so both see the same machine noise.
    for i in 0..calls {
        let t = Instant::now();
        relayed(&mut cloud, &call, 1000 + i).await;
        relay_us.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        direct(&direct_client, &url).await;
        direct_us.push(t.elapsed().as_micros() as u64);
    }
    let r = Stats::of(&mut relay_us);
    let d = Stats::of(&mut direct_us);
    println!("relay latency, {calls} sequential GETs each (µs)");
    println!("| path | p50 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| relayed via Mosquitto + tether | {} | {} | {} | {} |",
        r.p50, r.p99, r.p999, r.max
    );
    println!(
        "| direct HTTP | {} | {} | {} | {} |",
        d.p50, d.p99, d.p999, d.max
    );
    println!(
        "| added by the relay path | {} | {} | {} | |",
        r.p50 as i64 - d.p50 as i64,
        r.p99 as i64 - d.p99 as i64,
        r.p999 as i64 - d.p999 as i64
    );
    println!(
        "{}",
        json!({"bench": "relay_latency", "calls": calls,
               "relayed_us": {"p50": r.p50, "p99": r.p99, "p999": r.p999, "max": r.max},
               "direct_us": {"p50": d.p50, "p99": d.p99, "p999": d.p999, "max": d.max}})
    );
    stop.cancel();
    let _ = run.await;
}

/// Polls the daemon's `/healthz` until its hub session is subscribed, not
/// just connected: a call sent earlier would find no method subscription
/// and never be answered.
async fn wait_subscribed(admin: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{admin}/healthz")).await {
            if let Ok(h) = answer.json::<Value>().await {
                if h["hub"]["subscribed"] == true {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the daemon's hub session never subscribed");
}

async fn relayed(cloud: &mut Observer, call: &str, rid: usize) {
    let res = cloud
        .call("dev1", "RestApi", &rid.to_string(), call, WAIT)
        .await
        .unwrap();
    assert!(
        res.topic.starts_with("devices/dev1/methods/res/200/"),
        "{}",
        res.topic
    );
}

async fn direct(client: &reqwest::Client, url: &str) {
    let resp = client
        .get(url)
        .basic_auth(ECLYPSE_USER, Some(ECLYPSE_PASSWORD))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("direct GET");
    assert_eq!(resp.status(), 200);
    let _ = resp.bytes().await;
}

struct Stats {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Stats {
    fn of(v: &mut [u64]) -> Stats {
        v.sort_unstable();
        let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
        Stats {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: v[v.len() - 1],
        }
    }
}
