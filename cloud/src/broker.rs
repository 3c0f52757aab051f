//! The cloud side's one MQTT connection: calls direct methods on the
//! plain-broker topic scheme and tracks device presence.
//!
//! - Subscribes to `devices/+/methods/res/#` and `devices/+/status` on
//!   every connect (clean session, so a restart leaves nothing behind).
//! - Each call gets a UUID `$rid`; answers with an unknown `$rid` belong
//!   to another instance on the same broker and are dropped. That keeps
//!   instances stateless behind a load balancer.
//! - Presence comes from tether's retained `{"online":...}` status (and its
//!   Last Will), so "not connected" is known at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::BrokerConfig;
use super::error::CloudError;
use tether_protocol::topics::cloud as topics;

/// Largest method payload either way (IoT Hub's 128 KiB, cloud-relay.md §7).
pub const MAX_METHOD_PAYLOAD: usize = 128 * 1024;
/// Packets up to this size are read, so an oversized answer is reported
/// as too large rather than breaking the connection.
const MAX_PACKET_BYTES: usize = 1024 * 1024;
/// Retained presence arrives right after the SUBACK; an unknown device is
/// only judged absent once this has passed.
const PRESENCE_SETTLE: Duration = Duration::from_millis(500);
/// Devices whose presence is tracked; past this, untracked devices are
/// tried rather than refused.
const MAX_PRESENCE: usize = 100_000;
/// How long a call waits for the very first connection attempt.
const CONNECT_GRACE: Duration = Duration::from_secs(3);

/// A device's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status in the response topic.
    pub status: u16,
    /// The payload as sent.
    pub payload: Vec<u8>,
}

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The device's presence says it is offline, or it never said.
    #[error("device {0:?} is not connected")]
    NotConnected(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The broker connection is down.
    #[error("broker unreachable: {0}")]
    Unavailable(String),
    /// Too many calls in flight.
    #[error("too many calls awaiting an answer")]
    Busy,
    /// The request or the answer exceeds [`MAX_METHOD_PAYLOAD`].
    #[error("method payload of {0} bytes is over the 128 KiB limit")]
    TooLarge(usize),
}

#[derive(Debug, Clone)]
enum Link {
    /// Never connected yet.
    Connecting,
    /// Connected and subscribed since then.
    Ready(Instant),
    /// Lost or refused, with the reason; retrying.
    Down(String),
}

struct Shared {
    pending: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    presence: Mutex<Presence>,
    link: watch::Sender<Link>,
    max_pending: usize,
}

#[derive(Default)]
struct Presence {
    online: HashMap<String, bool>,
    overflowed: bool,
}

/// A handle on the connection; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    client: AsyncClient,
    shared: Arc<Shared>,
}

/// rumqttc options for `cfg` under `client_id`, clean session.
pub(crate) fn options(cfg: &BrokerConfig, client_id: &str) -> Result<MqttOptions, CloudError> {
    let ep = cfg.endpoint()?;
    let mut opts = MqttOptions::new(client_id, ep.host, ep.port);
    opts.set_keep_alive(cfg.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some(user) = &cfg.username {
        let password = cfg.password.as_ref().map(|p| p.expose().to_string());
        opts.set_credentials(user.clone(), password.unwrap_or_default());
    }
    if ep.tls {
        let tls = super::tls::client_config(cfg.ca_file.as_deref())?;
        opts.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)));
    }
    Ok(opts)
}

impl Broker {
    /// Starts the connection task; it reconnects until `shutdown`.
    ///
    /// # Errors
    /// A malformed broker URL or unusable TLS files. Connection failures
    /// are not errors here: calls report them.
    pub fn start(
        cfg: &BrokerConfig,
        max_pending: usize,
        shutdown: CancellationToken,
    ) -> Result<Broker, CloudError> {
        let id = format!("tether-cloud-{}", uuid::Uuid::new_v4().simple());
        let opts = options(cfg, &id)?;
        let (client, eventloop) = AsyncClient::new(opts, 256);
        let (link, _) = watch::channel(Link::Connecting);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            presence: Mutex::new(Presence::default()),
            link,
            max_pending,
        });
        tokio::spawn(drive(eventloop, client.clone(), shared.clone(), shutdown));
        Ok(Broker { client, shared })
    }

    /// Waits (at most `wait`) for a first connection attempt to settle.
    ///
    /// # Errors
    /// [`CallError::Unavailable`] when the broker is down or still
    /// connecting after `wait`.
    pub async fn ready(&self, wait: Duration) -> Result<Instant, CallError> {
        let mut rx = self.shared.link.subscribe();
        // Either way the current value is what counts.
        let _ = tokio::time::timeout(wait, rx.wait_for(|l| !matches!(l, Link::Connecting))).await;
        let link = rx.borrow().clone();
        match link {
            Link::Ready(since) => Ok(since),
            Link::Connecting => Err(CallError::Unavailable("still connecting".into())),
            Link::Down(reason) => Err(CallError::Unavailable(reason)),
        }
    }

    /// Whether `device` is online. `None`: not tracked (presence cache
    /// full), so worth trying.
    async fn online(&self, device: &str, ready_since: Instant) -> Option<bool> {
        let settle = ready_since + PRESENCE_SETTLE;
        let seen = self.lookup(device);
        if seen == Some(None) && Instant::now() < settle {
            // Retained statuses may still be on their way.
            tokio::time::sleep_until(settle).await;
            return self.lookup(device).map(|o| o.unwrap_or(false));
        }
        seen.map(|o| o.unwrap_or(false))
    }

    /// The device's last presence: `Some(true)` online, `Some(false)`
    /// offline, `None` never seen (or untracked).
    pub fn presence(&self, device: &str) -> Option<bool> {
        self.lookup(device).flatten()
    }

    /// `Some(Some(online))` when known, `Some(None)` when never seen,
    /// `None` when untracked because the cache overflowed.
    fn lookup(&self, device: &str) -> Option<Option<bool>> {
        let p = self
            .shared
            .presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match p.online.get(device) {
            Some(online) => Some(Some(*online)),
            None if p.overflowed => None,
            None => Some(None),
        }
    }

    /// Whether a call to `device` can go out now: the broker is up and
    /// the device online (or untracked).
    ///
    /// # Errors
    /// [`CallError::Unavailable`] or [`CallError::NotConnected`].
    pub async fn preflight(&self, device: &str) -> Result<(), CallError> {
        let since = self.ready(CONNECT_GRACE).await?;
        if self.online(device, since).await == Some(false) {
            return Err(CallError::NotConnected(device.to_string()));
        }
        Ok(())
    }

    /// Calls `method` on `device` and waits at most `timeout` for the
    /// answer.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn call(
        &self,
        device: &str,
        method: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        if payload.len() > MAX_METHOD_PAYLOAD {
            return Err(CallError::TooLarge(payload.len()));
        }
        self.preflight(device).await?;
        let rid = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if pending.len() >= self.shared.max_pending {
                return Err(CallError::Busy);
            }
            pending.insert(rid.clone(), tx);
        }
        // Removes the entry however this future ends (answer, timeout,
        // or the HTTP client going away).
        let _guard = PendingGuard {
            shared: &self.shared,
            rid: &rid,
        };
        let topic = topics::method_call(device, method, &rid);
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| CallError::Unavailable(format!("cannot queue the call: {e}")))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) if answer.payload.len() > MAX_METHOD_PAYLOAD => {
                Err(CallError::TooLarge(answer.payload.len()))
            }
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(CallError::Unavailable("the broker task stopped".into())),
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }
}

struct PendingGuard<'a> {
    shared: &'a Shared,
    rid: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.rid);
    }
}

/// Polls the event loop until `shutdown`, subscribing on each CONNACK and
/// backing off after failures.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        // Cancel-safe: poll() keeps its state in the event loop.
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(500);
                let subs = [topics::ANSWERS_FILTER, topics::PRESENCE_FILTER]
                    .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(subs) {
                    shared
                        .link
                        .send_replace(Link::Down(format!("cannot subscribe: {e}")));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let ok = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                let link = if ok {
                    tracing::info!("cloud broker connected and subscribed");
                    Link::Ready(Instant::now())
                } else {
                    Link::Down("the broker refused the subscriptions (check its ACL)".into())
                };
                shared.link.send_replace(link);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => shared.on_publish(&p),
            Ok(_) => {}
            Err(e) => {
                let reason = describe(&e);
                tracing::warn!(error = %reason, "cloud broker connection failed; retrying");
                shared.link.send_replace(Link::Down(reason));
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    let _ = client.try_disconnect();
    shared.link.send_replace(Link::Down("stopped".into()));
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("the broker refused us: {code:?}"),
        other => other.to_string(),
    }
}

impl Shared {
    fn on_publish(&self, p: &Publish) {
        if let Some(answer) = topics::parse_method_answer(&p.topic) {
            let tx = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&answer.rid);
            // No entry: another instance's call, or one that timed out.
            if let Some(tx) = tx {
                let _ = tx.send(Answer {
                    status: answer.status,
                    payload: p.payload.to_vec(),
                });
            }
        } else if let Some(device) = topics::parse_presence(&p.topic) {
            let online = serde_json::from_slice::<serde_json::Value>(&p.payload)
                .ok()
                .and_then(|v| v.get("online").and_then(serde_json::Value::as_bool));
            let mut presence = self.presence.lock().unwrap_or_else(PoisonError::into_inner);
            match online {
                // An empty retained payload clears the status.
                None => {
                    presence.online.remove(device);
                }
                Some(online) => {
                    if presence.online.len() < MAX_PRESENCE || presence.online.contains_key(device)
                    {
                        presence.online.insert(device.to_string(), online);
                    } else {
                        presence.overflowed = true;
                    }
                }
            }
        }
    }
}
