//! The load and the observers: admin-API posters, the no-persistence
//! rumqttc baseline publisher, and a cloud subscriber that counts distinct
//! message ids.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::procs::TOKEN;

pub const EVENTS: &str = "devices/dev1/messages/events/";
/// Attribute changes per admin API request.
pub const BATCH: u64 = 100;
/// Concurrent admin API clients.
pub const POSTERS: u64 = 8;

/// One request body of `BATCH` attribute changes, built once.
fn batch_body() -> axum::body::Bytes {
    let items: Vec<String> = (0..BATCH)
        .map(|i| {
            format!(
                r#"{{"attributeId":{},"value":{i},"attributeDataType":"SINT32"}}"#,
                1 + i
            )
        })
        .collect();
    format!("[{}]", items.join(",")).into()
}

/// What the posters achieved.
pub struct Posted {
    pub accepted: u64,
    pub refused: u64,
    pub elapsed: Duration,
}

/// Posts batches from `POSTERS` clients until `total` messages were
/// accepted (if given) or `until` passes.
pub async fn post_load(
    http: &reqwest::Client,
    admin: SocketAddr,
    total: Option<u64>,
    until: Option<Instant>,
) -> Posted {
    let body = batch_body();
    let claimed = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..POSTERS {
        let (http, body) = (http.clone(), body.clone());
        let (claimed, accepted, refused) = (claimed.clone(), accepted.clone(), refused.clone());
        let url = format!("http://{admin}/v1/attributes");
        tasks.push(tokio::spawn(async move {
            loop {
                if until.is_some_and(|u| Instant::now() >= u) {
                    return;
                }
                if total.is_some_and(|t| claimed.fetch_add(BATCH, Ordering::SeqCst) >= t) {
                    return;
                }
                let r = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("admin API answers");
                match r.status().as_u16() {
                    202 => {
                        accepted.fetch_add(BATCH, Ordering::SeqCst);
                    }
                    s => {
                        refused.fetch_add(BATCH, Ordering::SeqCst);
                        if total.is_some() {
                            claimed.fetch_sub(BATCH, Ordering::SeqCst);
                        }
                        eprintln!("admin API refused a batch: {s}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                let _ = r.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("poster");
    }
    Posted {
        accepted: accepted.load(Ordering::SeqCst),
        refused: refused.load(Ordering::SeqCst),
        elapsed: start.elapsed(),
    }
}

/// What the subscriber saw.
#[derive(Default)]
pub struct Seen {
    pub publishes: u64,
    pub payload_bytes: u64,
    pub topic_bytes: u64,
    pub ids: HashSet<u128>,
}

/// A cloud-side subscriber on `devices/dev1/messages/events/#`, QoS 1,
/// persistent session, re-subscribing on every CONNACK. Counts distinct
/// `$.mid` values from the topic's property bag.
pub struct Subscriber {
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn connect(port: u16, client_id: &str) -> Subscriber {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(false);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let subscribed = Arc::new(AtomicBool::new(false));
        let (s2, sub2) = (seen.clone(), subscribed.clone());
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(format!("{EVENTS}#"), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => sub2.store(true, Ordering::SeqCst),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let mut s = s2.lock().unwrap();
                        s.publishes += 1;
                        s.payload_bytes += p.payload.len() as u64;
                        s.topic_bytes += p.topic.len() as u64;
                        if let Some(id) = mid(&p.topic) {
                            s.ids.insert(id);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !subscribed.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "no SUBACK");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Subscriber { seen, task }
    }

    pub fn distinct(&self) -> u64 {
        self.seen.lock().unwrap().ids.len() as u64
    }

    /// Waits until `n` distinct ids were seen or nothing new came for `quiet`.
    pub async fn wait_distinct(&self, n: u64, quiet: Duration) -> u64 {
        let mut last = (self.distinct(), Instant::now());
        loop {
            let d = self.distinct();
            if d >= n {
                return d;
            }
            if d != last.0 {
                last = (d, Instant::now());
            } else if last.1.elapsed() > quiet {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The message id in a topic's property bag (`%24.mid=...&`), as a number.
fn mid(topic: &str) -> Option<u128> {
    let at = topic.find("%24.mid=")? + "%24.mid=".len();
    let v = &topic[at..];
    let v = &v[..v.find('&').unwrap_or(v.len())];
    match uuid::Uuid::parse_str(v) {
        Ok(u) => Some(u.as_u128()),
        Err(_) => v.parse().ok(),
    }
}

/// The baseline: a plain rumqttc QoS 1 publisher, no persistence, the same
/// in-flight window as tether (64), topic and payload of the same sizes.
/// Returns PUBACKs per second over `duration`.
pub async fn baseline_publisher(
    port: u16,
    duration: Duration,
    topic_len: usize,
    payload_len: usize,
) -> (u64, Duration) {
    let mut opts = MqttOptions::new("baseline-publisher", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(64);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    let acks = Arc::new(AtomicU64::new(0));
    let a2 = acks.clone();
    let el = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    a2.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("baseline publisher: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    let payload = vec![b'x'; payload_len];
    let prefix = format!("{EVENTS}%24.mid=");
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < duration {
        n += 1;
        let mut topic = format!("{prefix}{n}&type=attribute");
        while topic.len() < topic_len {
            topic.push('&');
        }
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("publish");
    }
    let took = start.elapsed();
    let done = acks.load(Ordering::Relaxed);
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), el).await;
    (done, took)
}
