//! The session task, a thin driver of [`Machine`]: owns rumqttc's event
//! loop, connects (waiting for a plausible clock first), renews SAS tokens
//! by reconnecting and reconnects forever when and as the machine decides,
//! and reports PUBACKs per delivery token.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::{is_plausible, SharedClock};
use crate::config::HubConfig;
use crate::service::Beat;

use super::alarm::Alarm;
use super::credentials::{CredentialSource, Credentials};
use super::handle::{HubHandle, Shared};
use super::machine::HubStatus;
use super::machine::{Action, Level, Machine, Now, Settings, Timer, TokenLife};
use super::methods::Router;
use super::options::{self, OptionsError, Target};
use super::topics::{Scheme, Topics};
use super::tracker::{Queued, Token, Tracker};

/// What the session tells the owner of delivery tokens (the outbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// A new connection is up (numbered from 1).
    Connected(u64),
    /// The publish with this token was acknowledged by the hub.
    Acked(Token),
    /// The connection dropped: every tracked publish not yet acknowledged
    /// must be sent again.
    InFlightLost,
}

/// A running hub session.
pub(crate) struct Hub {
    /// Handle for publishing and status.
    pub handle: HubHandle,
    /// Delivery notices, for exactly one consumer.
    pub deliveries: mpsc::Receiver<Delivery>,
    /// The session task; ends after shutdown.
    pub task: JoinHandle<()>,
}

/// Concurrent direct-method calls; beyond it calls are answered 503 at once.
const METHOD_SLOTS: usize = 32;
/// Answers the session sends itself (503, 413) waiting for room in the
/// request channel.
pub(super) const ANSWERS_WAITING: usize = 256;
/// How long a clean disconnect may take at shutdown.
const DISCONNECT_GRACE: Duration = Duration::from_secs(3);
/// Margin added to the silence a loop announces before it counts as stuck.
const SLACK: Duration = Duration::from_secs(30);

/// Starts the session task. `reported` seeds the reported properties.
///
/// # Errors
/// When TLS material or the proxy setting cannot be used.
pub(crate) fn start(
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

    let origin = Instant::now();
    let now = Now {
        mono: Duration::ZERO,
        wall: clock.now(),
    };
    let target = options::target(cfg);
    let settings = Settings {
        target: target.to_string(),
        device_id: topics.device_id().to_string(),
        keep_alive: opts.keep_alive(),
    };
    let machine = Machine::new(settings, StdRng::from_entropy(), now);
    let (status_tx, status_rx) = watch::channel(machine.status().clone());
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
            held: watch::channel(awaiting_assignment(cfg)).0,
        }),
    };
    let session = Session {
        eventloop,
        machine,
        origin,
        handle: handle.clone(),
        creds,
        clock,
        target,
        router: Arc::new(router),
        tracker: Tracker::new(queued),
        deliveries: delivery_tx,
        status: status_tx,
        renewal: None,
        beat,
        connect_timeout: cfg.connect_timeout,
        method_slots: Arc::new(Semaphore::new(METHOD_SLOTS)),
        answers_waiting: Arc::new(Semaphore::new(ANSWERS_WAITING)),
        twin_get: None,
        shutdown,
        alarm: Alarm::new(),
    };
    let task = tokio::spawn(session.run());
    Ok(Hub {
        handle,
        deliveries,
        task,
    })
}

/// The thin driver around [`Machine`]: it owns rumqttc's event loop, feeds
/// the machine what happens and does what the machine decides.
pub(super) struct Session {
    pub(super) eventloop: EventLoop,
    pub(super) machine: Machine,
    /// Where the machine's monotonic time starts.
    pub(super) origin: Instant,
    pub(super) handle: HubHandle,
    pub(super) creds: CredentialSource,
    pub(super) clock: SharedClock,
    pub(super) target: Target,
    pub(super) router: Arc<Router>,
    pub(super) tracker: Tracker,
    pub(super) deliveries: mpsc::Sender<Delivery>,
    pub(super) status: watch::Sender<HubStatus>,
    /// The DISCONNECT asked for when the token is due for renewal.
    pub(super) renewal: Option<JoinHandle<()>>,
    pub(super) beat: Beat,
    pub(super) connect_timeout: Duration,
    pub(super) method_slots: Arc<Semaphore>,
    pub(super) answers_waiting: Arc<Semaphore>,
    pub(super) twin_get: Option<String>,
    pub(super) shutdown: CancellationToken,
    pub(super) alarm: Alarm,
}

/// What ended one wait of the session task.
enum Next {
    /// The event loop produced an event or failed.
    Event(Result<Event, ConnectionError>),
    /// The silence watchdog declared the link dead; the message says so.
    LinkDead(String),
    /// Shutdown while not connected.
    Stop,
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
            let next = if self.shutdown.is_cancelled() {
                // Draining after DISCONNECT was requested: bounded.
                match tokio::time::timeout(DISCONNECT_GRACE, self.eventloop.poll()).await {
                    Ok(ev) => Next::Event(ev),
                    Err(_) => break,
                }
            } else {
                self.next_event().await
            };
            let retry = match next {
                Next::Stop => break,
                Next::Event(Ok(Event::Outgoing(Outgoing::Disconnect)))
                    if self.shutdown.is_cancelled() =>
                {
                    break
                }
                Next::Event(Ok(event)) => {
                    if matches!(event, Event::Incoming(_)) {
                        self.machine.packet_seen(self.now());
                    }
                    let decided = self.on_event(event);
                    let keep_alive = self.keep_alive();
                    self.beat
                        .beat_expecting(keep_alive + self.connect_timeout + SLACK);
                    // PUBACKs and outgoing publishes, the bulk of events,
                    // change neither the status nor the machine's plans.
                    if decided {
                        self.apply()
                    } else {
                        None
                    }
                }
                Next::Event(Err(err)) => self.on_error(&err),
                Next::LinkDead(message) => self.on_silent_link(message),
            };
            if let Some(delay) = retry {
                self.beat
                    .beat_expecting(delay + self.connect_timeout + SLACK);
                let released = self.released();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = released => {}
                    () = self.shutdown.cancelled() => break,
                }
            }
        }
        stopper.abort();
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        self.machine.stopped(self.now());
        self.apply();
        info!("hub session stopped");
    }

    /// Polls the event loop until it yields, running the machine's timers
    /// meanwhile. The poll future lives across timer ticks: a poll on a
    /// live connection is never cancelled (it may be halfway through
    /// writing a packet), with one exception, a link the silence watchdog
    /// declared dead (see [`Session::on_silent_link`] for why that is
    /// sound). Shutdown on a live connection arrives as a DISCONNECT request
    /// through the stopper task.
    async fn next_event(&mut self) -> Next {
        let connected = self.machine.is_connected();
        let poll = self.eventloop.poll();
        tokio::pin!(poll);
        loop {
            self.alarm
                .set(self.machine.poll_timeout().map(|t| self.origin + t));
            tokio::select! {
                biased;
                ev = &mut poll => return Next::Event(ev),
                () = self.shutdown.cancelled(), if !connected => return Next::Stop,
                () = self.alarm.fired() => {
                    match self.machine.handle_timeout(now(self.origin, &self.clock)) {
                        Some(Timer::LinkDead(message)) => return Next::LinkDead(message),
                        Some(Timer::RenewToken) => {
                            debug!("the SAS token is due for renewal");
                            let client = self.handle.shared.client.clone();
                            self.renewal = Some(tokio::spawn(async move {
                                let _ = client.disconnect().await;
                            }));
                        }
                        None => {}
                    }
                }
            }
        }
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
        while !is_plausible(self.clock.now()) {
            self.machine.clock_not_set(self.now());
            self.apply();
            self.beat.beat_expecting(SLACK);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = self.shutdown.cancelled() => return false,
            }
        }
        if !self.wait_while_held().await {
            return false;
        }
        self.apply_next_config();
        let now = self.now();
        let creds = match self.creds.current(now.wall) {
            Ok(c) => {
                self.machine.token_issued(now, token(&c));
                Some(c)
            }
            Err(e) => {
                let fallback = self.creds.expired_fallback();
                self.machine
                    .token_refused(now, e.to_string(), fallback.as_ref().map(token));
                fallback
            }
        };
        if let Some(creds) = creds {
            let password = creds.password.as_ref().map(|p| p.expose().to_string());
            self.eventloop
                .mqtt_options
                .set_credentials(creds.username, password.unwrap_or_default());
            self.machine.connecting(now);
        }
        self.apply();
        true
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
            self.eventloop.mqtt_options = next.options;
            self.creds = next.creds;
            self.target = next.target;
            self.connect_timeout = next.connect_timeout;
            let settings = Settings {
                target: self.target.to_string(),
                device_id: self.handle.topics().device_id().to_string(),
                keep_alive: self.keep_alive(),
            };
            self.machine.reconfigured(settings);
        }
    }

    pub(super) fn keep_alive(&self) -> Duration {
        self.eventloop.mqtt_options.keep_alive()
    }

    pub(super) fn now(&self) -> Now {
        now(self.origin, &self.clock)
    }

    /// Does what the machine decided; returns the delay before the next
    /// connection attempt, when it decided one. The status goes out first,
    /// so whoever hears of a new connection already sees it connected.
    pub(super) fn apply(&mut self) -> Option<Duration> {
        self.publish_status();
        let mut retry = None;
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Subscribe => self.subscribe(),
                Action::Announce(connection) => {
                    self.announce();
                    self.notify(Delivery::Connected(connection));
                }
                Action::Log(level, message) => log(level, &message),
                Action::RetryAfter(delay) => {
                    debug!(?delay, "next connection attempt");
                    retry = Some(delay);
                }
            }
        }
        self.publish_status();
        retry
    }

    /// Publishes the machine's status when it changed.
    pub(super) fn publish_status(&self) {
        let latest = self.machine.status();
        self.status.send_if_modified(|s| {
            let changed = s != latest;
            if changed {
                latest.clone_into(s);
            }
            changed
        });
    }

    /// Handles one event; true when the machine took part (its status or
    /// actions may have changed).
    fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                self.machine.connack(self.now());
                info!(
                    target = %self.target,
                    session_present = ack.session_present,
                    connection = self.machine.connection(),
                    "hub connected"
                );
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .filter(|c| matches!(c, SubscribeReasonCode::Failure))
                    .count();
                self.machine
                    .suback(ack.pkid, ack.return_codes.len(), refused);
            }
            Event::Incoming(Packet::Publish(p)) => self.on_publish(p),
            Event::Incoming(Packet::PublishTooLarge(p)) => self.on_publish_too_large(p),
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(token) = self.tracker.on_puback(ack.pkid) {
                    self.notify(Delivery::Acked(token));
                }
                return false;
            }
            Event::Outgoing(Outgoing::Subscribe(pkid)) => self.machine.subscribe_sent(pkid),
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                self.tracker.on_outgoing_publish(pkid);
                return false;
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                self.tracker.on_await_ack(pkid);
                return false;
            }
            _ => {}
        }
        true
    }

    pub(super) fn notify(&self, d: Delivery) {
        if let Err(e) = self.deliveries.try_send(d) {
            // Only a consumer that stopped reading gets here; the message is
            // then resent later (a duplicate), never lost.
            debug!(error = %e, "delivery notice dropped");
        }
    }
}

/// The time now on both clocks, the monotonic one counted from `origin`.
fn now(origin: Instant, clock: &SharedClock) -> Now {
    Now {
        mono: origin.elapsed(),
        wall: clock.now(),
    }
}

/// Whether the hub is yet to be assigned by DPS: the session starts held.
fn awaiting_assignment(cfg: &HubConfig) -> bool {
    matches!(&cfg.endpoint, crate::config::HubEndpoint::Azure(a) if !a.is_assigned())
}

/// What the machine needs to know of a credential.
fn token(c: &Credentials) -> TokenLife {
    TokenLife {
        expires_at: c.expires_at,
        renew_at: c.renew_at,
    }
}

fn log(level: Level, message: &str) {
    match level {
        Level::Debug => debug!("{message}"),
        Level::Info => info!("{message}"),
        Level::Warn => warn!("{message}"),
        Level::Error => error!("{message}"),
    }
}
