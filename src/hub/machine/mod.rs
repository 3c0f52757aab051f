//! The hub session's decisions, with no IO: when to connect again and after
//! how long, what repeated quick drops mean (another client with our device
//! id, or a packet tether cannot read redelivered on every reconnect), when a
//! silent link counts as dead (half-open), when a SAS token is renewed, and
//! the status health and metrics see (subscriptions in place included).
//!
//! Like `firmware-bridge`'s `Module`: the driver (the `session` task) passes
//! events with the time they happened ([`Now`]), and drains what to do from
//! [`Machine::poll_action`]; it asks [`Machine::poll_timeout`] when to call
//! [`Machine::handle_timeout`]. Nothing here reads a clock, sleeps or
//! touches a socket, so every decision is unit-tested with made-up times.

mod drops;
pub(crate) mod renewal;
mod status;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use tether_protocol::time::unix_seconds;

use crate::backoff::Backoff;

use super::refusal::Reason;
use drops::QuickDrops;
use renewal::{RenewalDue, Step};
pub(crate) use status::{ConnState, HubStatus};

/// The time of an event on both clocks: `mono` (since any fixed origin,
/// never jumps) measures intervals, `wall` is what tokens and status show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    /// Monotonic time since the driver's origin.
    pub mono: Duration,
    /// The wall clock.
    pub wall: SystemTime,
}

/// Why the last attempt failed; auth, TLS and throttling get a longer floor
/// because retrying them quickly only adds load (and throttling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Network unreachable, refused, reset, timed out.
    Network,
    /// The hub refused the credentials.
    Auth,
    /// TLS handshake or certificate failure.
    Tls,
    /// The hub said "server unavailable" / throttled us.
    Throttled,
}

impl Failure {
    /// The shortest wait before trying again after this failure.
    pub(crate) fn retry_floor(self) -> Duration {
        match self {
            Failure::Network => NETWORK_FLOOR,
            Failure::Auth | Failure::Tls | Failure::Throttled => SLOW_FLOOR,
        }
    }
}

/// Lowest delay for network failures: never a busy loop.
pub(crate) const NETWORK_FLOOR: Duration = Duration::from_millis(250);
/// Lowest delay after auth, TLS or throttling failures.
pub(crate) const SLOW_FLOOR: Duration = Duration::from_secs(10);
/// Reconnect delays start at this ceiling and double up to [`BACKOFF_CAP`].
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest reconnect delay.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// What the machine needs to know about the connection it drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// `host:port`, for messages.
    pub target: String,
    /// The device id, named when another client seems to use it.
    pub device_id: String,
    /// The MQTT keep-alive; zero turns the silence watchdog off.
    pub keep_alive: Duration,
}

/// The credential in use, as far as timing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenLife {
    /// When it stops being valid.
    pub expires_at: Option<SystemTime>,
    /// When to reconnect with a fresh one (80 % of a minted token's life).
    pub renew_at: Option<SystemTime>,
}

/// A connection attempt failed or a live connection was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lost {
    /// Its class, for the backoff floor.
    pub failure: Failure,
    /// What happened, said plainly.
    pub message: String,
    /// tether itself dropped the connection over a packet it cannot read.
    pub unreadable: bool,
    /// The disconnect was asked for (new configuration): not a failure.
    pub requested: bool,
}

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal life.
    Info,
    /// Something an operator may have to fix.
    Warn,
    /// Something an operator must fix.
    Error,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Subscribe to every inbound topic, then report the SUBSCRIBE's packet
    /// id ([`Machine::subscribe_sent`]) and its SUBACK ([`Machine::suback`]).
    Subscribe,
    /// Connection number `n` is up: presence, twin and the delivery notice.
    Announce(u64),
    /// Write this line to the log.
    Log(Level, String),
    /// Connect again after this long.
    RetryAfter(Duration),
}

/// What [`Machine::handle_timeout`] found due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The SAS token is due for renewal: disconnect, so the next connect
    /// presents a fresh one (reported as [`Machine::lost`]).
    RenewToken,
    /// The broker has been silent too long: drop the connection, then
    /// report it with [`Machine::lost`] and this message.
    LinkDead(String),
}

/// A connection that dies sooner than this after CONNACK counts as a quick
/// drop; [`QUICK_DROPS_TO_WARN`] in a row get a diagnosis.
pub(crate) const QUICK_DROP: Duration = Duration::from_secs(10);
/// Quick drops in a row before the log says what they probably mean.
pub(crate) const QUICK_DROPS_TO_WARN: u32 = 3;

/// The hub session's state and decisions.
#[derive(Debug)]
pub(crate) struct Machine {
    settings: Settings,
    backoff: Backoff,
    rng: StdRng,
    status: HubStatus,
    connection: u64,
    connected_at: Option<Duration>,
    last_incoming: Duration,
    drops: QuickDrops,
    last_logged: Option<String>,
    clock_told: bool,
    renewal: Option<(RenewalDue, Duration)>,
    renewing: bool,
    subscriptions: Subscriptions,
    actions: VecDeque<Action>,
}

/// SUBSCRIBE requests of the current connection not yet acknowledged.
#[derive(Debug, Default)]
struct Subscriptions {
    /// Queued but not yet written (no packet id known).
    unsent: u32,
    /// Written, waiting for their SUBACK.
    awaiting: Vec<u16>,
    /// Filters the broker refused on this connection.
    refused: usize,
}

impl Subscriptions {
    fn in_place(&self) -> bool {
        self.unsent == 0 && self.awaiting.is_empty() && self.refused == 0
    }
}

impl Machine {
    /// A machine for `settings`, drawing jitter from `rng`, started at `now`.
    pub(crate) fn new(settings: Settings, rng: StdRng, now: Now) -> Self {
        Self {
            settings,
            backoff: Backoff::new(BACKOFF_BASE, BACKOFF_CAP).with_floor(NETWORK_FLOOR),
            rng,
            status: HubStatus::new(now.wall),
            connection: 0,
            connected_at: None,
            last_incoming: now.mono,
            drops: QuickDrops::default(),
            last_logged: None,
            clock_told: false,
            renewal: None,
            renewing: false,
            subscriptions: Subscriptions::default(),
            actions: VecDeque::new(),
        }
    }

    /// The status to publish.
    pub(crate) fn status(&self) -> &HubStatus {
        &self.status
    }

    /// The number of the current (or last) connection, from 1.
    pub(crate) fn connection(&self) -> u64 {
        self.connection
    }

    /// Whether a CONNACK was received and the connection not lost since.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected_at.is_some()
    }

    /// The next action, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Machine::handle_timeout`] wants to be called (monotonic).
    pub(crate) fn poll_timeout(&self) -> Option<Duration> {
        let renewal = self.renewal.map(|(_, check_at)| check_at);
        match (self.silence_deadline(), renewal) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Checks the silence watchdog and the renewal deadline.
    pub(crate) fn handle_timeout(&mut self, now: Now) -> Option<Timer> {
        if let Some(deadline) = self.silence_deadline() {
            if now.mono >= deadline {
                return Some(Timer::LinkDead(self.silence_message(now)));
            }
        }
        let (due, check_at) = self.renewal?;
        if now.mono < check_at {
            return None;
        }
        match due.step(now.wall, now.mono) {
            Step::Renew => {
                self.renewal = None;
                self.renewing = true;
                Some(Timer::RenewToken)
            }
            Step::Wait(d) => {
                self.renewal = Some((due, now.mono + d));
                None
            }
        }
    }

    /// The wall clock reads before this build: connecting waits for NTP.
    pub(crate) fn clock_not_set(&mut self, now: Now) {
        if self.clock_told {
            return;
        }
        self.clock_told = true;
        self.log(
            Level::Warn,
            format!(
                "the system clock reads {} (Unix seconds), a time before this build; waiting \
                 for it to be set (NTP) before connecting: TLS certificates and SAS tokens need \
                 the real time",
                unix_seconds(now.wall)
            ),
        );
        self.set_state(now, ConnState::WaitingForClock, None);
    }

    /// A new configuration applies from the next connect: past failures
    /// say nothing about it.
    pub(crate) fn reconfigured(&mut self, settings: Settings) {
        self.log(
            Level::Info,
            format!("applying the new hub configuration ({})", settings.target),
        );
        self.settings = settings;
        self.backoff.reset();
    }

    /// A credential was made for the next connect.
    pub(crate) fn token_issued(&mut self, now: Now, token: TokenLife) {
        self.status.credential_expired = false;
        self.use_token(now, token);
    }

    /// No valid credential can be made (`error` says why); `fallback` is
    /// presented anyway, if there is one, so the hub says so too.
    pub(crate) fn token_refused(&mut self, now: Now, error: String, fallback: Option<TokenLife>) {
        if !self.status.credential_expired {
            self.log(Level::Error, error.clone());
        }
        self.status.credential_expired = true;
        self.status.last_error = Some(error);
        if let Some(token) = fallback {
            self.use_token(now, token);
        }
    }

    /// A connection attempt starts.
    pub(crate) fn connecting(&mut self, now: Now) {
        self.clock_told = false;
        if self.status.state != ConnState::Disconnected {
            self.set_state(now, ConnState::Connecting, None);
        }
        self.log(
            Level::Debug,
            format!("connecting to {}", self.settings.target),
        );
    }

    /// CONNACK (accepted).
    pub(crate) fn connack(&mut self, now: Now) {
        self.connection += 1;
        self.connected_at = Some(now.mono);
        self.last_incoming = now.mono;
        self.last_logged = None;
        self.status.connects += 1;
        self.status.subscribed = false;
        self.subscriptions = Subscriptions {
            unsent: 1,
            ..Subscriptions::default()
        };
        self.set_state(now, ConnState::Connected, None);
        self.actions.push_back(Action::Subscribe);
        self.actions.push_back(Action::Announce(self.connection));
    }

    /// The SUBSCRIBE could not even be queued.
    pub(crate) fn subscribe_failed(&mut self, error: &str) {
        self.subscriptions.unsent = 0;
        self.subscriptions.refused += 1;
        self.log(
            Level::Warn,
            format!("could not queue subscriptions ({error}); they will be retried on reconnect"),
        );
    }

    /// The SUBSCRIBE went out with packet id `pkid`.
    pub(crate) fn subscribe_sent(&mut self, pkid: u16) {
        if self.subscriptions.unsent == 0 {
            return;
        }
        self.subscriptions.unsent -= 1;
        self.subscriptions.awaiting.push(pkid);
    }

    /// The SUBACK for `pkid`: `refused` of its `filters` were refused.
    pub(crate) fn suback(&mut self, pkid: u16, filters: usize, refused: usize) {
        let Some(at) = self.subscriptions.awaiting.iter().position(|p| *p == pkid) else {
            return;
        };
        self.subscriptions.awaiting.swap_remove(at);
        if refused > 0 {
            self.subscriptions.refused += refused;
            self.log(
                Level::Warn,
                format!(
                    "{} refused {refused} of {filters} subscriptions: direct methods, desired \
                     properties or cloud-to-device messages will not arrive; check the broker's \
                     ACL for device {:?}",
                    self.settings.target, self.settings.device_id
                ),
            );
        }
        self.status.subscribed = self.is_connected() && self.subscriptions.in_place();
    }

    /// Anything arrived from the broker (a PINGRESP included).
    pub(crate) fn packet_seen(&mut self, now: Now) {
        self.last_incoming = now.mono;
    }

    /// An inbound message was refused for `reason`.
    pub(crate) fn inbound_refused(&mut self, reason: Reason) {
        self.status.inbound_refused.add(reason);
    }

    /// A connection attempt failed or a live connection was lost: decides
    /// the delay ([`Action::RetryAfter`]) and the line to log.
    pub(crate) fn lost(&mut self, now: Now, lost: Lost) {
        let was_connected = self.connected_at.take();
        self.renewal = None;
        self.status.disconnects += 1;
        self.status.subscribed = false;
        self.subscriptions = Subscriptions::default();
        if lost.requested || std::mem::take(&mut self.renewing) {
            self.log(Level::Info, "reconnecting with fresh credentials".into());
            self.set_state(now, ConnState::Connecting, None);
            self.actions.push_back(Action::RetryAfter(Duration::ZERO));
            return;
        }
        match was_connected {
            Some(at) if now.mono.saturating_sub(at) < QUICK_DROP => {
                self.drops.quick(lost.unreadable);
            }
            Some(_) => {
                self.drops.reset();
                self.backoff.reset();
            }
            None => {}
        }
        let mut message = lost.message;
        if let Some(diagnosis) = self.drops.diagnosis(&self.settings.device_id) {
            message = format!("{message}; {diagnosis}");
        }
        if self.last_logged.as_deref() == Some(message.as_str()) {
            self.log(Level::Debug, message.clone());
        } else {
            self.log(Level::Warn, message.clone());
            self.last_logged = Some(message.clone());
        }
        let delay = self
            .backoff
            .next_delay_at_least(lost.failure.retry_floor(), &mut self.rng);
        self.log(
            Level::Debug,
            format!("next connection attempt in {delay:?}"),
        );
        self.set_state(now, ConnState::Disconnected, Some((message, lost.failure)));
        self.actions.push_back(Action::RetryAfter(delay));
    }

    /// The session stopped (shutdown).
    pub(crate) fn stopped(&mut self, now: Now) {
        self.connected_at = None;
        self.renewal = None;
        self.status.subscribed = false;
        self.set_state(now, ConnState::Stopped, None);
    }

    fn use_token(&mut self, now: Now, token: TokenLife) {
        self.status.credential_expires_at = token.expires_at.map(unix_seconds);
        self.renewal = token
            .renew_at
            .map(|at| (RenewalDue::new(at, now.wall, now.mono), now.mono));
    }

    /// 1.5 keep-alive intervals after the last packet, the limit MQTT gives
    /// the broker for the client. rumqttc pings every keep-alive whatever the
    /// traffic, so a healthy broker sends something (at least a PINGRESP)
    /// about once per interval; rumqttc itself notices a missing PINGRESP
    /// only at the following ping (~2 intervals). A keep-alive of zero (off)
    /// never expires.
    fn silence_deadline(&self) -> Option<Duration> {
        let keep_alive = self.settings.keep_alive;
        if self.connected_at.is_none() || keep_alive.is_zero() {
            return None;
        }
        Some(self.last_incoming + keep_alive * 3 / 2)
    }

    fn silence_message(&self, now: Now) -> String {
        format!(
            "no packet from {} for {:.1} s (keep-alive {} s): the link looks dead (half-open); \
             reconnecting",
            self.settings.target,
            now.mono.saturating_sub(self.last_incoming).as_secs_f32(),
            self.settings.keep_alive.as_secs()
        )
    }

    fn log(&mut self, level: Level, message: String) {
        self.actions.push_back(Action::Log(level, message));
    }

    /// Enters `state`; an error replaces the last one, and connecting
    /// successfully clears it.
    fn set_state(&mut self, now: Now, state: ConnState, error: Option<(String, Failure)>) {
        let s = &mut self.status;
        if s.state != state {
            s.since = now.wall;
        }
        s.state = state;
        if let Some((message, failure)) = error {
            s.last_error = Some(message);
            s.last_failure = Some(failure);
        } else if state == ConnState::Connected {
            s.last_error = None;
            s.last_failure = None;
        }
    }
}
