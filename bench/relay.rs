//! Scenario 3: relayed GETs (cloud client → Mosquitto → tether → local HTTP
//! server → back) against direct GETs to the same server, interleaved in the
//! same run; then throughput with 4 and 16 calls in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::procs::{self, Mosquitto, Tether};
use crate::{stats_us, Params};

const INFO: &str = r#"{"deviceName":"eclypse-bench","model":"ECY-S1000","firmware":"1.19.22161.1","serialNumber":"0123456789","macAddress":"00:11:22:33:44:55","points":42}"#;

/// A local HTTP server playing the controller's REST API.
async fn controller() -> SocketAddr {
    let app = axum::Router::new().route(
        "/api/rest/v1/info",
        get(|| async { ([("content-type", "application/json")], INFO) }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<u16>>>>;

/// The cloud side: calls the `RestApi` method and matches answers by `$rid`.
#[derive(Clone)]
struct Cloud {
    client: AsyncClient,
    pending: Pending,
    next: Arc<AtomicU64>,
}

impl Cloud {
    async fn connect(port: u16) -> Cloud {
        let mut opts = MqttOptions::new("bench-cloud", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let pending: Pending = Arc::default();
        let (p2, c2) = (pending.clone(), client.clone());
        let (tx, rx) = oneshot::channel();
        let mut ready = Some(tx);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c2.try_subscribe("devices/dev1/methods/res/#", QoS::AtMostOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let status = p.topic.split('/').nth(4).and_then(|s| s.parse().ok());
                        let rid = p
                            .topic
                            .rsplit_once("$rid=")
                            .and_then(|(_, r)| r.parse().ok());
                        if let (Some(status), Some(rid)) = (status, rid) {
                            if let Some(tx) = p2.lock().unwrap().remove(&rid) {
                                let _ = tx.send(status);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("cloud SUBACK")
            .unwrap();
        Cloud {
            client,
            pending,
            next: Arc::default(),
        }
    }

    async fn call(&self) -> u16 {
        let rid = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(rid, tx);
        let body = r#"{"path":"/api/rest/v1/info","method":"GET"}"#;
        self.client
            .publish(
                format!("devices/dev1/methods/POST/RestApi/?$rid={rid}"),
                QoS::AtLeastOnce,
                false,
                body,
            )
            .await
            .expect("publish call");
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("relayed answer within 30 s")
            .unwrap_or(0)
    }
}

async fn direct(http: &reqwest::Client, url: &str) -> u16 {
    let r = http.get(url).send().await.expect("direct GET");
    let s = r.status().as_u16();
    let _ = r.bytes().await;
    s
}

/// `conc` workers make `total` calls between them; returns calls/s,
/// latencies and non-200 answers.
async fn concurrent<F, Fut>(conc: usize, total: u64, f: F) -> Value
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = u16> + Send,
{
    let left = Arc::new(AtomicU64::new(total));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (left, f) = (left.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            let (mut us, mut bad) = (Vec::new(), 0u64);
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let t = Instant::now();
                if f().await != 200 {
                    bad += 1;
                }
                us.push(t.elapsed().as_micros() as u64);
            }
            (us, bad)
        }));
    }
    let (mut us, mut bad) = (Vec::new(), 0);
    for t in tasks {
        let (u, b) = t.await.unwrap();
        us.extend(u);
        bad += b;
    }
    let secs = start.elapsed().as_secs_f64();
    json!({"calls": total, "per_s": (total as f64 / secs).round(), "non_200": bad, "latency_us": stats_us(&mut us)})
}

pub async fn run(p: &Params, bin: &std::path::Path) -> Value {
    let broker = Mosquitto::start(false);
    let ctl = controller().await;
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", procs::free_port()).parse().unwrap();
    let cfg = dir.path().join("tether.toml");
    let extra = format!("[controller]\nbase_url = \"http://{ctl}\"\n");
    let text = procs::config(broker.port, admin, dir.path(), &p.store, &extra);
    std::fs::write(&cfg, text).unwrap();
    let http = reqwest::Client::new();
    let tether = Tether::start(bin, &cfg, admin, &p.tether_env);
    tether.connected(&http).await;
    let cloud = Cloud::connect(broker.port).await;
    let url = format!("http://{ctl}/api/rest/v1/info");
    for _ in 0..100 {
        assert_eq!(cloud.call().await, 200, "relayed warm-up call");
        direct(&http, &url).await;
    }
    let (mut r, mut d) = (Vec::new(), Vec::new());
    let mut rss_max = 0;
    for i in 0..p.calls {
        let t = Instant::now();
        assert_eq!(cloud.call().await, 200);
        r.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        assert_eq!(direct(&http, &url).await, 200);
        d.push(t.elapsed().as_micros() as u64);
        if i % 500 == 0 {
            rss_max = rss_max.max(tether.rss_kib().0);
        }
    }
    let (rs, ds) = (stats_us(&mut r), stats_us(&mut d));
    let added = |k: &str| rs[k].as_i64().unwrap_or(0) - ds[k].as_i64().unwrap_or(0);
    let mut out = json!({
        "calls": p.calls,
        "relayed_us": rs, "direct_us": ds,
        "added_us": {"p50": added("p50"), "p99": added("p99"), "p999": added("p999")},
    });
    let conc_calls = (p.calls / 2).max(400);
    for conc in [4usize, 16] {
        let c = cloud.clone();
        let relayed = concurrent(conc, conc_calls, move || {
            let c = c.clone();
            async move { c.call().await }
        })
        .await;
        rss_max = rss_max.max(tether.rss_kib().0);
        let (h, u) = (http.clone(), url.clone());
        let direct = concurrent(conc, conc_calls, move || {
            let (h, u) = (h.clone(), u.clone());
            async move { direct(&h, &u).await }
        })
        .await;
        out[format!("concurrent_{conc}")] = json!({"relayed": relayed, "direct": direct});
    }
    let (_, hwm) = tether.rss_kib();
    out["rss_kib"] = json!({"max_sampled": rss_max, "hwm": hwm});
    tether.stop();
    out
}
