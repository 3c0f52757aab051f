//! Shared parts of the chaos tests: HTTP load against the real binary that
//! records every accepted id, and the tally a subscriber makes of them
//! (delivered, lost, duplicates), printed as one row of the fault table.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::outbox_rig::{body_ids, Subscriber, EVENTS, TOKEN};

/// Whether the long variants run (`TETHER_CHAOS_LONG=1`).
pub(crate) fn long() -> bool {
    std::env::var("TETHER_CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// Attribute changes per request.
pub(crate) const BATCH: usize = 10;

/// HTTP clients posting attribute batches until stopped.
pub(crate) struct Load {
    accepted: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` loops against the admin API at `addr`. Errors and
    /// timeouts (tether down, store full) are expected: only 202 answers
    /// count as accepted.
    pub(crate) fn start(http: &reqwest::Client, addr: SocketAddr, clients: u32) -> Load {
        Load::spawn(http, addr, clients, None)
    }

    /// One client posting a batch of [`BATCH`] every `every`: a steady rate
    /// for long runs (full speed for an hour would fill the disk).
    pub(crate) fn paced(http: &reqwest::Client, addr: SocketAddr, every: Duration) -> Load {
        Load::spawn(http, addr, 1, Some(every))
    }

    fn spawn(
        http: &reqwest::Client,
        addr: SocketAddr,
        clients: u32,
        every: Option<Duration>,
    ) -> Load {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let tasks = (0..clients)
            .map(|c| {
                let (http, accepted, stop) = (http.clone(), accepted.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u32;
                    let mut tick = every.map(tokio::time::interval);
                    while !stop.is_cancelled() {
                        if let Some(t) = tick.as_mut() {
                            t.tick().await;
                        }
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

    /// Ids accepted so far.
    pub(crate) fn count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// Stops the clients and returns every accepted id.
    pub(crate) async fn stop(self) -> Vec<String> {
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
    let batch: Vec<Value> = (0..BATCH as u32)
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
pub(crate) struct Tally {
    pub accepted: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
}

impl Tally {
    /// Prints the row of the fault table (`CHAOS|` lines; `--nocapture`).
    pub(crate) fn report(&self, fault: &str, runs: usize) {
        eprintln!(
            "CHAOS| {fault} | {runs} | {} | {} | {} | {}",
            self.accepted, self.delivered, self.lost, self.duplicates
        );
    }
}

/// Reads the subscriber until every accepted id arrived or `timeout`
/// passed. Every copy of an id counts; a duplicate carries the same id by
/// construction (ids are what is counted).
pub(crate) async fn tally(sub: &mut Subscriber, accepted: &[String], timeout: Duration) -> Tally {
    tally_counts(sub, accepted, timeout).await.0
}

/// [`tally`], with the copies received of every id (accepted or not).
pub(crate) async fn tally_counts(
    sub: &mut Subscriber,
    accepted: &[String],
    timeout: Duration,
) -> (Tally, HashMap<String, usize>) {
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
    let t = Tally {
        accepted: want.len(),
        delivered,
        lost: want.len() - delivered,
        duplicates: counts.values().map(|c| c - 1).sum(),
    };
    (t, counts)
}

/// Waits until the subscriber receives a probe published on the broker at
/// `port` (after a broker restart it has resubscribed); what it receives
/// meanwhile is kept in `sub.seen`.
pub(crate) async fn subscriber_back(sub: &mut Subscriber, port: u16) {
    let probe = tether_testkit::cloud(port, &[]).await;
    let topic = format!("{EVENTS}probe");
    for _ in 0..100 {
        probe
            .publish(&topic, "probe", false)
            .await
            .expect("publish");
        while let Some(p) = sub.next(Duration::from_millis(100)).await {
            if p.topic == topic {
                return;
            }
            sub.seen.push(p);
        }
    }
    panic!("the subscriber never came back");
}

/// Waits until tether's outbox for the hub is empty (all PUBACKed).
pub(crate) async fn wait_drained(
    http: &reqwest::Client,
    addr: SocketAddr,
    timeout: Duration,
) -> bool {
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

/// Fetches `/healthz` (any status code); `Null` when tether does not answer.
pub(crate) async fn health(http: &reqwest::Client, addr: SocketAddr) -> Value {
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
