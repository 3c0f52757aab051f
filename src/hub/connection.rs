//! Connection life of the session task, as the machine decides it: what is
//! sent after CONNACK (subscriptions, presence, twin) and the bookkeeping
//! when a connection is lost or refused (in-flight publishes, the silent
//! link's socket).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{Event, Outgoing, QoS, Request};
use serde_json::Value;
use tracing::warn;

use tether_protocol::time::unix_seconds;

use super::failure::{classify, is_unreadable_packet};
use super::machine::{Failure, Lost};
use super::session::{Delivery, Session};
use super::topics::Scheme;

impl Session {
    pub(super) fn subscribe(&mut self) {
        let client = &self.handle.shared.client;
        let subs = self
            .handle
            .topics()
            .subscriptions()
            .into_iter()
            .map(|t| rumqttc::SubscribeFilter::new(t, QoS::AtLeastOnce));
        if let Err(e) = client.try_subscribe_many(subs) {
            self.machine.subscribe_failed(&e.to_string());
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

    /// The machine found the broker silent too long: the link is half-open
    /// (a blackhole drops our packets and theirs, with no FIN or RST).
    /// Drops the connection and returns the delay before the next attempt.
    ///
    /// This is the only place a poll on a connected event loop is cancelled,
    /// and it is sound because the connection is never used again: a packet
    /// cut halfway can only be followed by the socket closing (the broker
    /// sees a torn stream, as after any cut), and nothing can be done from
    /// outside instead: rumqttc owns the socket (no read timeout, no way to
    /// shut it down), `try_disconnect` waits in the request channel behind a
    /// write that may be blocked, and TCP keepalive or `TCP_USER_TIMEOUT`
    /// never fire when a middlebox still acknowledges at the TCP level. The
    /// bookkeeping a cancelled poll leaves behind is settled by `clean()`
    /// (unacknowledged publishes and unread requests move to `pending`) and
    /// by `forget_in_flight`, which maps the publishes written but not yet
    /// surfaced as events before forgetting them.
    pub(super) fn on_silent_link(&mut self, message: String) -> Option<Duration> {
        self.eventloop.clean();
        self.on_lost(Failure::Network, message, false)
    }

    /// Handles a lost or refused connection; returns the delay before the
    /// next attempt.
    pub(super) fn on_error(&mut self, err: &rumqttc::ConnectionError) -> Option<Duration> {
        let (failure, message) = classify(err, &self.target.to_string());
        self.on_lost(failure, message, is_unreadable_packet(err))
    }

    /// `unreadable`: tether dropped the connection itself over a packet it
    /// cannot read.
    fn on_lost(&mut self, failure: Failure, message: String, unreadable: bool) -> Option<Duration> {
        self.forget_in_flight(self.machine.is_connected());
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        let requested = self
            .handle
            .shared
            .reconnect_now
            .swap(false, Ordering::SeqCst);
        let lost = Lost {
            failure,
            message,
            unreadable,
            requested,
        };
        self.machine.lost(self.now(), lost);
        self.apply()
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
        // A poll that failed (or was cancelled) while writing a publish has
        // already taken its record's place in the channel and queued its
        // `Outgoing` event; that publish now sits in `pending` with a packet
        // id, so it is not counted in `drained`. Map it before forgetting,
        // or every later PUBACK would confirm the token of the message before.
        for event in self.eventloop.state.events.drain(..) {
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => self.tracker.on_outgoing_publish(pkid),
                Event::Outgoing(Outgoing::AwaitAck(pkid)) => self.tracker.on_await_ack(pkid),
                _ => {}
            }
        }
        self.eventloop.state.collision = None;
        self.tracker.on_connection_lost(drained);
        if was_connected {
            self.notify(Delivery::InFlightLost);
        }
    }
}
