//! Connection life of the session task: what happens on CONNACK
//! (subscriptions, presence, twin, delivery notice) and when a connection
//! is lost or refused (in-flight bookkeeping, backoff, one log line per
//! change).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{QoS, Request};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::clock::unix_seconds;

use super::failure::classify;
use super::session::{Delivery, Session, QUICK_DROP, QUICK_DROPS_TO_WARN};
use super::status::ConnState;
use super::topics::Scheme;

impl Session {
    pub(super) fn on_connected(&mut self, session_present: bool) {
        self.connection += 1;
        self.connected_at = Some(Instant::now());
        self.last_logged = None;
        info!(target = %self.target, session_present, connection = self.connection, "hub connected");
        self.status.send_modify(|s| s.connects += 1);
        self.set_state(ConnState::Connected, None, None);
        self.subscribe();
        self.announce();
        self.notify(Delivery::Connected(self.connection));
    }

    pub(super) fn subscribe(&self) {
        let client = &self.handle.shared.client;
        let subs = self
            .handle
            .topics()
            .subscriptions()
            .into_iter()
            .map(|t| rumqttc::SubscribeFilter::new(t, QoS::AtLeastOnce));
        if let Err(e) = client.try_subscribe_many(subs) {
            warn!(error = %e, "could not queue subscriptions; they will be retried on reconnect");
        }
    }

    /// Presence (plain broker), twin GET (Azure) and the reported document.
    pub(super) fn announce(&mut self) {
        let shared = &self.handle.shared;
        let topics = &shared.topics;
        let reported = Value::Object(
            shared
                .reported
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        );
        let result = match topics.scheme() {
            Scheme::Plain => {
                let online = serde_json::json!({
                    "online": true,
                    "agent": concat!("tether/", env!("CARGO_PKG_VERSION")),
                    "connectedAt": unix_seconds(self.clock.now()),
                });
                self.publish_untracked(topics.status(), online.to_string(), true)
                    .and_then(|()| {
                        self.publish_untracked(topics.twin_reported(""), reported.to_string(), true)
                    })
            }
            Scheme::Azure => {
                let rid = super::handle::next_rid();
                let get = shared.client.try_publish(
                    topics.twin_get(&rid),
                    QoS::AtMostOnce,
                    false,
                    Vec::new(),
                );
                self.twin_get = Some(rid);
                let patch = shared.client.try_publish(
                    topics.twin_reported(&super::handle::next_rid()),
                    QoS::AtMostOnce,
                    false,
                    reported.to_string(),
                );
                get.and(patch)
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "could not queue presence/twin messages after connecting");
        }
    }

    pub(super) fn publish_untracked(
        &self,
        topic: String,
        body: String,
        retain: bool,
    ) -> Result<(), rumqttc::ClientError> {
        let shared = &self.handle.shared;
        shared.queued.push_with(None, || {
            shared
                .client
                .try_publish(topic, QoS::AtLeastOnce, retain, body)
        })
    }

    /// Handles a lost or refused connection; returns the delay before the
    /// next attempt.
    pub(super) fn on_error(&mut self, err: &rumqttc::ConnectionError) -> Duration {
        let was_connected = self.connected_at.take();
        self.forget_in_flight(was_connected.is_some());
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        self.status.send_modify(|s| s.disconnects += 1);
        if self
            .handle
            .shared
            .reconnect_now
            .swap(false, Ordering::SeqCst)
        {
            info!("reconnecting with fresh credentials");
            self.set_state(ConnState::Connecting, None, None);
            return Duration::ZERO;
        }
        let (failure, mut message) = classify(err, &self.target.to_string());
        match was_connected {
            Some(at) if at.elapsed() < QUICK_DROP => self.quick_drops += 1,
            Some(_) => {
                self.quick_drops = 0;
                self.backoff.reset();
            }
            None => {}
        }
        if self.quick_drops >= QUICK_DROPS_TO_WARN {
            message = format!(
                "{message}; the hub closed the connection {} times right after accepting it: \
                 another client is probably connected with device id {:?} (a hub allows one \
                 connection per device)",
                self.quick_drops,
                self.handle.topics().device_id()
            );
        }
        if self.last_logged.as_deref() != Some(message.as_str()) {
            warn!("{message}");
            self.last_logged = Some(message.clone());
        } else {
            debug!("{message}");
        }
        let delay = self.backoff.next_delay(failure, &mut rand::thread_rng());
        debug!(?delay, "next connection attempt");
        self.set_state(ConnState::Disconnected, Some(message), Some(failure));
        delay
    }

    /// rumqttc moves unacknowledged publishes, and requests still in its
    /// channel, into `pending` and would replay them only if the broker kept
    /// the session. We drop them all and let the token owner resend, so the
    /// packet-id mapping stays exact whatever the broker says.
    pub(super) fn forget_in_flight(&mut self, was_connected: bool) {
        let drained = self
            .eventloop
            .pending
            .iter()
            .filter(|r| matches!(r, Request::Publish(p) if p.qos != QoS::AtMostOnce && p.pkid == 0))
            .count();
        self.eventloop.pending.clear();
        self.eventloop.state.events.clear();
        self.eventloop.state.collision = None;
        self.tracker.on_connection_lost(drained);
        if was_connected {
            self.notify(Delivery::InFlightLost);
        }
    }
}
