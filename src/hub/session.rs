//! The session task: owns rumqttc's event loop, connects (waiting for a
//! plausible clock first), renews SAS tokens by reconnecting, reconnects
//! forever with jittered backoff, and reports PUBACKs per delivery token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::{is_plausible, unix_seconds, SharedClock};
use crate::config::HubConfig;
use crate::service::Beat;

use super::backoff::{Backoff, Failure};
use super::credentials::CredentialSource;
use super::handle::{HubHandle, Shared};
use super::methods::Router;
use super::options::{self, OptionsError, Target};
use super::renewal::{RenewalDue, Step};
use super::status::{ConnState, HubStatus};
use super::topics::{Scheme, Topics};
use super::tracker::{Queued, Token, Tracker};

/// What the session tells the owner of delivery tokens (the outbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A new connection is up (numbered from 1).
    Connected(u64),
    /// The publish with this token was acknowledged by the hub.
    Acked(Token),
    /// The connection dropped: every tracked publish not yet acknowledged
    /// must be sent again.
    InFlightLost,
}

/// A running hub session.
pub struct Hub {
    /// Handle for publishing and status.
    pub handle: HubHandle,
    /// Delivery notices, for exactly one consumer.
    pub deliveries: mpsc::Receiver<Delivery>,
    /// The session task; ends after shutdown.
    pub task: JoinHandle<()>,
}

/// A connection that dies sooner than this after CONNACK counts as a quick
/// drop; several in a row mean another client has our device id, or, when
/// tether itself dropped each one over a packet it cannot read, a broker
/// redelivering that packet on every reconnect.
pub(super) const QUICK_DROP: Duration = Duration::from_secs(10);
pub(super) const QUICK_DROPS_TO_WARN: u32 = 3;
/// Concurrent direct-method calls; beyond it calls are answered 503 at once.
const METHOD_SLOTS: usize = 32;
/// Answers the session sends itself (503, 413) waiting for room in the
/// request channel.
pub(super) const ANSWERS_WAITING: usize = 256;
/// How long a clean disconnect may take at shutdown.
const DISCONNECT_GRACE: Duration = Duration::from_secs(3);
/// Margin added to the silence a loop announces before it counts as stuck.
const SLACK: Duration = Duration::from_secs(30);

/// How long a live connection may stay silent before it counts as dead:
/// 1.5 keep-alive intervals, the limit MQTT gives the broker for the client.
/// rumqttc pings every keep-alive whatever the traffic, so a healthy broker
/// sends something (at least a PINGRESP) about once per interval; rumqttc
/// itself notices a missing PINGRESP only at the following ping (~2
/// intervals). A keep-alive of zero (off) never expires.
pub(super) fn silence_limit(keep_alive: Duration) -> Duration {
    if keep_alive.is_zero() {
        // Far enough to never fire, near enough not to overflow an Instant.
        Duration::from_secs(100 * 365 * 24 * 3600)
    } else {
        keep_alive * 3 / 2
    }
}

/// Starts the session task. `reported` seeds the reported properties.
///
/// # Errors
/// When TLS material or the proxy setting cannot be used.
pub fn start(
    cfg: &HubConfig,
    router: Router,
    clock: SharedClock,
    reported: Map<String, Value>,
    beat: Beat,
    shutdown: CancellationToken,
) -> Result<Hub, OptionsError> {
    let creds = CredentialSource::new(&cfg.endpoint, cfg.sas_ttl);
    let (scheme, module) = match &cfg.endpoint {
        crate::config::HubEndpoint::Azure(a) => (Scheme::Azure, a.module_id.as_deref()),
        crate::config::HubEndpoint::Broker(_) => (Scheme::Plain, None),
    };
    let topics = Topics::new(scheme, cfg.endpoint.device_id(), module);
    let mut opts = options::build(cfg, creds.client_id(), &topics)?;
    let (client, mut eventloop) = AsyncClient::new(opts.clone(), options::REQUEST_CAPACITY);
    let mut net = eventloop.network_options();
    net.set_connection_timeout(cfg.connect_timeout.as_secs().max(1));
    // Method answers and PUBACK-paced telemetry are small writes: Nagle's
    // algorithm against the peer's delayed ACK would add ~40 ms to each.
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    opts.set_credentials("", "");

    let (status_tx, status_rx) = watch::channel(HubStatus::new(clock.now()));
    let (delivery_tx, deliveries) = mpsc::channel(2 * options::MAX_IN_FLIGHT as usize + 8);
    let queued = Queued::default();
    let handle = HubHandle {
        shared: Arc::new(Shared {
            client: client.clone(),
            queued: queued.clone(),
            topics: topics.clone(),
            status: status_rx,
            reported: Mutex::new(reported),
            reconnect_now: AtomicBool::new(false),
            next_config: Mutex::new(None),
        }),
    };
    let session = Session {
        eventloop,
        handle: handle.clone(),
        creds,
        clock,
        target: options::target(cfg),
        router: Arc::new(router),
        tracker: Tracker::new(queued),
        deliveries: delivery_tx,
        status: status_tx,
        backoff: Backoff::hub_default(),
        connection: 0,
        connected_at: None,
        last_incoming: Instant::now(),
        quick_drops: 0,
        unreadable_drops: 0,
        last_logged: None,
        renewal: None,
        beat,
        connect_timeout: cfg.connect_timeout,
        method_slots: Arc::new(Semaphore::new(METHOD_SLOTS)),
        answers_waiting: Arc::new(Semaphore::new(ANSWERS_WAITING)),
        twin_get: None,
        shutdown,
    };
    let task = tokio::spawn(session.run());
    Ok(Hub {
        handle,
        deliveries,
        task,
    })
}

pub(super) struct Session {
    pub(super) eventloop: EventLoop,
    pub(super) handle: HubHandle,
    pub(super) creds: CredentialSource,
    pub(super) clock: SharedClock,
    pub(super) target: Target,
    pub(super) router: Arc<Router>,
    pub(super) tracker: Tracker,
    pub(super) deliveries: mpsc::Sender<Delivery>,
    pub(super) status: watch::Sender<HubStatus>,
    pub(super) backoff: Backoff,
    pub(super) connection: u64,
    pub(super) connected_at: Option<Instant>,
    /// When the broker last sent anything (PINGRESP included).
    pub(super) last_incoming: Instant,
    pub(super) quick_drops: u32,
    /// Of those quick drops, how many in a row tether caused itself by
    /// refusing an unreadable packet.
    pub(super) unreadable_drops: u32,
    pub(super) last_logged: Option<String>,
    pub(super) renewal: Option<JoinHandle<()>>,
    pub(super) beat: Beat,
    pub(super) connect_timeout: Duration,
    pub(super) method_slots: Arc<Semaphore>,
    pub(super) answers_waiting: Arc<Semaphore>,
    pub(super) twin_get: Option<String>,
    pub(super) shutdown: CancellationToken,
}

impl Session {
    async fn run(mut self) {
        let stopper = self.spawn_stopper();
        loop {
            if self.eventloop.network.is_none()
                && (self.shutdown.is_cancelled() || !self.prepare_connect().await)
            {
                break;
            }
            let event = if self.shutdown.is_cancelled() {
                // Draining after DISCONNECT was requested: bounded.
                match tokio::time::timeout(DISCONNECT_GRACE, self.eventloop.poll()).await {
                    Ok(ev) => ev,
                    Err(_) => break,
                }
            } else if self.connected_at.is_some() {
                // Never cancel a poll on a live connection (it may be halfway
                // through writing a packet); shutdown arrives as a DISCONNECT
                // request through the stopper task. The one exception is a
                // link already declared dead by the silence watchdog: see
                // `Session::on_silent_link` for why that cancel is sound.
                let deadline = self.last_incoming + silence_limit(self.keep_alive());
                tokio::select! {
                    biased;
                    ev = self.eventloop.poll() => ev,
                    () = tokio::time::sleep_until(deadline) => {
                        let delay = self.on_silent_link();
                        self.beat
                            .beat_expecting(delay + self.connect_timeout + SLACK);
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = self.shutdown.cancelled() => break,
                        }
                        continue;
                    }
                }
            } else {
                tokio::select! {
                    ev = self.eventloop.poll() => ev,
                    () = self.shutdown.cancelled() => break,
                }
            };
            match event {
                Ok(Event::Outgoing(Outgoing::Disconnect)) if self.shutdown.is_cancelled() => break,
                Ok(event) => {
                    if matches!(event, Event::Incoming(_)) {
                        self.last_incoming = Instant::now();
                    }
                    self.on_event(event);
                    let keep_alive = self.keep_alive();
                    self.beat
                        .beat_expecting(keep_alive + self.connect_timeout + SLACK);
                }
                Err(err) => {
                    let delay = self.on_error(&err);
                    self.beat
                        .beat_expecting(delay + self.connect_timeout + SLACK);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => break,
                    }
                }
            }
        }
        stopper.abort();
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        self.set_state(ConnState::Stopped, None, None);
        info!("hub session stopped");
    }

    /// Sends DISCONNECT when shutdown is requested, so the broker does not
    /// publish our Last Will for a clean stop.
    /// On a plain broker it first marks the device offline itself, since a
    /// clean DISCONNECT suppresses the Last Will.
    fn spawn_stopper(&self) -> JoinHandle<()> {
        let shutdown = self.shutdown.clone();
        let shared = self.handle.shared.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            if shared.topics.scheme() == Scheme::Plain && shared.status.borrow().is_connected() {
                let offline = r#"{"online":false}"#;
                let topic = shared.topics.status();
                let _ = shared.queued.push_with(None, || {
                    shared
                        .client
                        .try_publish(topic, QoS::AtLeastOnce, true, offline)
                });
            }
            let _ = shared.client.try_disconnect();
        })
    }

    /// Waits for a plausible clock and sets fresh credentials. Returns false
    /// when shutdown came first.
    async fn prepare_connect(&mut self) -> bool {
        let mut told = false;
        while !is_plausible(self.clock.now()) {
            if !told {
                warn!(
                    clock_unix = unix_seconds(self.clock.now()),
                    "the system clock reads a time before this build; waiting for it to be set \
                     (NTP) before connecting: TLS certificates and SAS tokens need the real time"
                );
                self.set_state(ConnState::WaitingForClock, None, None);
                told = true;
            }
            self.beat.beat_expecting(SLACK);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = self.shutdown.cancelled() => return false,
            }
        }
        self.apply_next_config();
        let creds = match self.creds.current(self.clock.now()) {
            Ok(c) => {
                self.status.send_modify(|s| s.credential_expired = false);
                c
            }
            Err(e) => {
                if !self.status.borrow().credential_expired {
                    error!("{e}");
                }
                self.status.send_modify(|s| {
                    s.credential_expired = true;
                    s.last_error = Some(e.to_string());
                });
                match self.creds.expired_fallback() {
                    Some(c) => c,
                    None => return true,
                }
            }
        };
        let password = creds.password.as_ref().map(|p| p.expose().to_string());
        self.eventloop
            .mqtt_options
            .set_credentials(creds.username.clone(), password.unwrap_or_default());
        let expires = creds.expires_at.map(unix_seconds);
        self.status
            .send_modify(|s| s.credential_expires_at = expires);
        self.schedule_renewal(creds.renew_at);
        if self.status.borrow().state != ConnState::Disconnected {
            self.set_state(ConnState::Connecting, None, None);
        }
        debug!(target = %self.target, "connecting");
        true
    }

    fn schedule_renewal(&mut self, renew_at: Option<std::time::SystemTime>) {
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        let Some(at) = renew_at else { return };
        let clock = self.clock.clone();
        let due = RenewalDue::new(at, clock.now(), Instant::now());
        let shared = self.handle.shared.clone();
        self.renewal = Some(tokio::spawn(async move {
            while let Step::Wait(d) = due.step(clock.now(), Instant::now()) {
                tokio::time::sleep(d).await;
            }
            debug!("the SAS token is due for renewal");
            shared.reconnect_now.store(true, Ordering::SeqCst);
            let _ = shared.client.disconnect().await;
        }));
    }

    /// Takes a configuration handed over by [`HubHandle::reconfigure`].
    fn apply_next_config(&mut self) {
        let next = self
            .handle
            .shared
            .next_config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(next) = next {
            info!(target = %next.target, "applying the new hub configuration");
            self.eventloop.mqtt_options = next.options;
            self.creds = next.creds;
            self.target = next.target;
            self.connect_timeout = next.connect_timeout;
            self.backoff.reset();
        }
    }

    pub(super) fn keep_alive(&self) -> Duration {
        self.eventloop.mqtt_options.keep_alive()
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => self.on_connected(ack.session_present),
            Event::Incoming(Packet::Publish(p)) => self.on_publish(p),
            Event::Incoming(Packet::PublishTooLarge(p)) => self.on_publish_too_large(p),
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(token) = self.tracker.on_puback(ack.pkid) {
                    self.notify(Delivery::Acked(token));
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => self.tracker.on_outgoing_publish(pkid),
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => self.tracker.on_await_ack(pkid),
            _ => {}
        }
    }

    pub(super) fn notify(&self, d: Delivery) {
        if let Err(e) = self.deliveries.try_send(d) {
            // Only a consumer that stopped reading gets here; the message is
            // then resent later (a duplicate), never lost.
            debug!(error = %e, "delivery notice dropped");
        }
    }

    pub(super) fn set_state(
        &self,
        state: ConnState,
        error: Option<String>,
        failure: Option<Failure>,
    ) {
        let now = self.clock.now();
        self.status.send_modify(|s| {
            if s.state != state {
                s.since = now;
            }
            s.state = state;
            if error.is_some() || state == ConnState::Connected {
                s.last_error = error;
                s.last_failure = failure;
            }
        });
    }
}
