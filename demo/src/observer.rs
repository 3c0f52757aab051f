//! The cloud's side of the broker: an MQTT client connected to it
//! directly (not through the link cutter) that plays the hub service. It
//! publishes method calls and documents, hands back what arrives on its
//! filters, and counts the distinct attribute messages tether delivers, so
//! the demo and the tests can hold what arrived against what was accepted.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, Event, EventLoop, MqttOptions, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use tether_protocol::topics::cloud as topics;

/// Publishes waiting to be read; past this the connection waits for the
/// reader (backpressure, nothing dropped).
const QUEUE: usize = 1024;
/// How long [`Observer::connect`] waits for the broker's CONNACK and SUBACK.
const READY_WAIT: Duration = Duration::from_secs(5);
/// The pause after a failed connection before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Big enough for any method answer or batch tether sends.
const MAX_PACKET: usize = 512 * 1024;

/// Why the observer could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    /// The broker did not accept the connection and subscriptions in time.
    #[error("cloud observer: not connected and subscribed to {filters:?} within {wait:?} (is the broker at {broker} up?)")]
    NotReady {
        /// The broker.
        broker: SocketAddr,
        /// What it was to subscribe to.
        filters: Vec<String>,
        /// How long it waited.
        wait: Duration,
    },
    /// The broker refused a subscription.
    #[error("cloud observer: the broker refused a subscription to {0:?} (check its ACL)")]
    Refused(Vec<String>),
    /// A request could not be queued: the connection task has stopped.
    #[error("cloud observer: cannot publish on {topic}: {source}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// Nothing matching arrived in time.
    #[error("cloud observer: nothing on {prefix}* within {wait:?}")]
    Nothing {
        /// What it waited for: a topic prefix, or a call's answer.
        prefix: String,
        /// How long it waited.
        wait: Duration,
    },
}

/// One attribute message as it arrived upstream.
#[derive(Debug, Clone)]
pub struct Arrived {
    /// Attribute id.
    pub attribute_id: u64,
    /// `attributeDataConverted`: the value as text.
    pub value: String,
    /// The topic it came on.
    pub topic: String,
}

/// A publish, with the attribute messages in it seen for the first time.
struct Received {
    publish: Publish,
    fresh: Vec<Arrived>,
}

/// Where the connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    Connecting,
    Ready,
    Refused,
}

/// A connected cloud-side client; it disconnects when dropped or when the
/// token given to [`Observer::connect`] is cancelled.
pub struct Observer {
    client: AsyncClient,
    received: mpsc::Receiver<Received>,
    /// Distinct attribute message ids seen: a message sent again after a
    /// lost PUBACK counts once.
    ids: Arc<Mutex<HashSet<String>>>,
    /// Arrivals read from a publish but not handed out yet.
    arrivals: VecDeque<Arrived>,
    stop: CancellationToken,
}

impl Observer {
    /// Connects anonymously to `broker` (clean session), subscribes to
    /// `filters` at QoS 1 on every connection, and returns once the broker
    /// acknowledged them (or, without filters, the connection).
    ///
    /// # Errors
    /// [`ObserverError::NotReady`] when that takes more than a few seconds,
    /// [`ObserverError::Refused`] when the broker refuses a filter.
    pub async fn connect(
        broker: SocketAddr,
        filters: &[&str],
        stop: CancellationToken,
    ) -> Result<Observer, ObserverError> {
        let id = format!("cloud-observer-{}", uuid::Uuid::new_v4().simple());
        let mut opts = MqttOptions::new(id, broker.ip().to_string(), broker.port());
        opts.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, mut events) = AsyncClient::new(opts, 64);
        let mut net = events.network_options();
        net.set_tcp_nodelay(true);
        events.set_network_options(net);
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let (link, mut ready) = watch::channel(Link::Connecting);
        let (tx, received) = mpsc::channel(QUEUE);
        let ids = Arc::new(Mutex::new(HashSet::new()));
        let stop = stop.child_token();
        let task = Task {
            client: client.clone(),
            filters: filters.clone(),
            link,
            tx,
            ids: ids.clone(),
        };
        tokio::spawn(task.run(events, stop.clone()));
        let settled = tokio::time::timeout(READY_WAIT, ready.wait_for(|l| *l != Link::Connecting));
        let outcome = settled.await.ok().and_then(|r| r.ok()).map(|l| l.clone());
        match outcome {
            Some(Link::Ready) => Ok(Observer {
                client,
                received,
                ids,
                arrivals: VecDeque::new(),
                stop,
            }),
            Some(Link::Refused) => Err(ObserverError::Refused(filters)),
            _ => Err(ObserverError::NotReady {
                broker,
                filters,
                wait: READY_WAIT,
            }),
        }
    }

    /// Publishes `payload` on `topic` at QoS 1.
    ///
    /// # Errors
    /// [`ObserverError::Publish`] when the connection task has stopped.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retain: bool,
    ) -> Result<(), ObserverError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|source| ObserverError::Publish {
                topic: topic.to_string(),
                source,
            })
    }

    /// The next publish whose topic starts with `prefix`, within `wait`;
    /// others that arrive first are passed over.
    ///
    /// # Errors
    /// [`ObserverError::Nothing`] when none arrives in time.
    pub async fn next_on(
        &mut self,
        prefix: &str,
        wait: Duration,
    ) -> Result<Publish, ObserverError> {
        self.next_where(|topic| topic.starts_with(prefix), wait)
            .await
            .ok_or_else(|| ObserverError::Nothing {
                prefix: prefix.to_string(),
                wait,
            })
    }

    /// Calls `method` on `device` (plain-broker scheme) under `rid` and
    /// returns the device's answer, within `wait`. The observer must be
    /// subscribed to the device's answers
    /// ([`ANSWERS_FILTER`](topics::ANSWERS_FILTER) or narrower).
    ///
    /// # Errors
    /// [`ObserverError::Publish`], or [`ObserverError::Nothing`] when no
    /// answer to this call arrives in time.
    pub async fn call(
        &mut self,
        device: &str,
        method: &str,
        rid: &str,
        payload: impl Into<Vec<u8>>,
        wait: Duration,
    ) -> Result<Publish, ObserverError> {
        let call = topics::method_call(device, method, rid);
        self.publish(&call, payload, false).await?;
        let answers_this = |topic: &str| {
            topics::parse_method_answer(topic).is_some_and(|a| a.device == device && a.rid == rid)
        };
        self.next_where(answers_this, wait)
            .await
            .ok_or_else(|| ObserverError::Nothing {
                prefix: format!("the answer to {call}"),
                wait,
            })
    }

    /// The next publish whose topic passes `wanted`, within `wait`.
    async fn next_where(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        wait: Duration,
    ) -> Option<Publish> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let r = tokio::time::timeout_at(deadline, self.received.recv())
                .await
                .ok()
                .flatten()?;
            if wanted(&r.publish.topic) {
                return Some(r.publish);
            }
        }
    }

    /// Distinct attribute messages delivered so far, read or not.
    pub fn delivered(&self) -> usize {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The next attribute message seen for the first time, within `wait`.
    pub async fn next_arrival(&mut self, wait: Duration) -> Option<Arrived> {
        let deadline = tokio::time::Instant::now() + wait;
        while self.arrivals.is_empty() {
            let r = tokio::time::timeout_at(deadline, self.received.recv())
                .await
                .ok()
                .flatten()?;
            self.arrivals.extend(r.fresh);
        }
        self.arrivals.pop_front()
    }

    /// Drops whatever arrived and was not read yet.
    pub fn drain(&mut self) {
        self.arrivals.clear();
        while self.received.try_recv().is_ok() {}
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The connection task's side.
struct Task {
    client: AsyncClient,
    filters: Vec<String>,
    link: watch::Sender<Link>,
    tx: mpsc::Sender<Received>,
    ids: Arc<Mutex<HashSet<String>>>,
}

impl Task {
    /// Polls until `stop` or until the observer is gone.
    async fn run(self, mut events: EventLoop, stop: CancellationToken) {
        loop {
            // Cancel-safe: poll() keeps its state in the event loop.
            let event = tokio::select! {
                () = stop.cancelled() => break,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => self.subscribe(),
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let ok = ack
                        .return_codes
                        .iter()
                        .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                    self.link
                        .send_replace(if ok { Link::Ready } else { Link::Refused });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let fresh = attributes(&p.topic, &p.payload, &self.ids);
                    let sent = tokio::select! {
                        () = stop.cancelled() => break,
                        s = self.tx.send(Received { publish: p, fresh }) => s,
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                },
            }
        }
        let _ = self.client.try_disconnect();
    }

    /// Clean session: the filters again on every connection.
    fn subscribe(&self) {
        if self.filters.is_empty() {
            self.link.send_replace(Link::Ready);
            return;
        }
        let filters = self
            .filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        // Only fails when the task is stopping, which ends the loop anyway.
        let _ = self.client.try_subscribe_many(filters);
    }
}

/// The attribute messages in one publish (one object, or an array when
/// the outbox batches) whose id is seen for the first time.
fn attributes(topic: &str, payload: &[u8], seen: &Mutex<HashSet<String>>) -> Vec<Arrived> {
    let Ok(body) = serde_json::from_slice::<Value>(payload) else {
        return Vec::new();
    };
    let items = match body {
        Value::Array(items) => items,
        one => vec![one],
    };
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    items
        .iter()
        .filter_map(|m| {
            let id = m.get("id")?.as_str()?;
            let attribute_id = m.get("attributeId")?.as_u64()?;
            if !seen.insert(id.to_string()) {
                return None;
            }
            Some(Arrived {
                attribute_id,
                value: m
                    .get("attributeDataConverted")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                topic: topic.to_string(),
            })
        })
        .collect()
}
