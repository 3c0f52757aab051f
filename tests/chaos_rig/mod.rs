//! Shared parts of the chaos tests: HTTP load against the real binary that
//! records every accepted id, and the tally a subscriber makes of them
//! (delivered, lost, duplicates), printed as one row of the fault table.
//! Each `tests/chaos_*.rs` says `mod chaos_rig;` (after `mod outbox_rig;`).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::outbox_rig::{body_ids, Subscriber, EVENTS, TOKEN};
use crate::support::mqtt::Cloud;

/// Whether the long variants run (`TETHER_CHAOS_LONG=1`).
pub fn long() -> bool {
    std::env::var("TETHER_CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// HTTP clients posting attribute batches until stopped.
pub struct Load {
    accepted: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` loops against the admin API at `addr`. Errors and
    /// timeouts (tether down, store full) are expected: only 202 answers
    /// count as accepted.
    pub fn start(http: &reqwest::Client, addr: SocketAddr, clients: u32) -> Load {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let tasks = (0..clients)
            .map(|c| {
                let (http, accepted, stop) = (http.clone(), accepted.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u32;
                    while !stop.is_cancelled() {
                        n += 1;
                        if !post(&http, addr, c, n, &accepted).await {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            accepted,
            stop,
            tasks,
        }
    }

    /// One client posting batches of 10 attributes at `per_second`
    /// messages a second (steady load for the soak). A slow or failed
    /// answer delays the next batch; missed ticks are skipped, not bunched.
    pub fn steady(http: &reqwest::Client, addr: SocketAddr, per_second: u32) -> Load {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let every = Duration::from_secs_f64(10.0 / f64::from(per_second.max(1)));
        let (http, acc, halt) = (http.clone(), accepted.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u32;
            while !halt.is_cancelled() {
                tick.tick().await;
                n += 1;
                post(&http, addr, 0, n, &acc).await;
            }
        });
        Load {
            accepted,
            stop,
            tasks: vec![task],
        }
    }

    /// Ids accepted so far.
    pub fn count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// Stops the clients and returns every accepted id.
    pub async fn stop(self) -> Vec<String> {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let ids = self.accepted.lock().unwrap().clone();
        ids
    }
}

async fn post(
    http: &reqwest::Client,
    addr: SocketAddr,
    c: u32,
    n: u32,
    accepted: &Mutex<Vec<String>>,
) -> bool {
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({"attributeId": c * 100 + i, "value": n, "attributeDataType": "SINT32"}))
        .collect();
    let sent = http
        .post(format!("http://{addr}/v1/attributes"))
        .bearer_auth(TOKEN)
        .json(&batch)
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    let Ok(r) = sent else { return false };
    if r.status().as_u16() != 202 {
        return false;
    }
    let body: Value = r.json().await.unwrap_or_default();
    let ids = body["ids"].as_array().cloned().unwrap_or_default();
    accepted
        .lock()
        .unwrap()
        .extend(ids.iter().filter_map(|v| v.as_str().map(str::to_string)));
    true
}

/// What a fault run delivered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub accepted: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
}

impl Tally {
    /// Prints the row of the fault table (`CHAOS|` lines; `--nocapture`).
    pub fn report(&self, fault: &str, runs: usize) {
        eprintln!(
            "CHAOS| {fault} | {runs} | {} | {} | {} | {}",
            self.accepted, self.delivered, self.lost, self.duplicates
        );
    }
}

/// Reads the subscriber until every accepted id arrived or `timeout`
/// passed. Every copy of an id counts; a duplicate carries the same id by
/// construction (ids are what is counted).
pub async fn tally(sub: &mut Subscriber, accepted: &[String], timeout: Duration) -> Tally {
    let want: HashSet<&String> = accepted.iter().collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = std::mem::take(&mut sub.seen);
    loop {
        for p in seen.drain(..) {
            for id in body_ids(&p.payload) {
                *counts.entry(id).or_default() += 1;
            }
        }
        if want.iter().all(|id| counts.contains_key(*id)) {
            break;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match sub.next(left).await {
            Some(p) => seen.push(p),
            None => break,
        }
    }
    let delivered = want.iter().filter(|id| counts.contains_key(**id)).count();
    Tally {
        accepted: want.len(),
        delivered,
        lost: want.len() - delivered,
        duplicates: counts.values().map(|c| c - 1).sum(),
    }
}

/// Waits until tether's outbox for the hub is empty (all PUBACKed).
pub async fn wait_drained(http: &reqwest::Client, addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("http://{addr}/v1/outbox/stats"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            let stats: Value = r.json().await.unwrap_or_default();
            if stats["sinks"][0]["depth"] == 0 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Polls `/healthz` until it says `ok`; the last answer when `timeout`
/// passed first (for the failure message).
pub async fn healthy_within(
    http: &reqwest::Client,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let h = health(http, addr).await;
        if h["status"] == "ok" {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(h);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fetches `/healthz` (any status code); `Null` when tether does not answer.
pub async fn health(http: &reqwest::Client, addr: SocketAddr) -> Value {
    match http
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    }
}

/// Waits until `sub` receives a probe published on the broker at `port`
/// again (it resubscribed after a broker restart); what arrives meanwhile
/// is kept in `sub.seen`.
pub async fn subscriber_back(sub: &mut Subscriber, port: u16) {
    let probe = Cloud::connect(port, &[]).await;
    let topic = format!("{EVENTS}probe");
    for _ in 0..100 {
        probe.publish(&topic, "probe", false).await;
        while let Some(p) = sub.next(Duration::from_millis(100)).await {
            if p.topic == topic {
                return;
            }
            sub.seen.push(p);
        }
    }
    panic!("the subscriber never came back");
}
