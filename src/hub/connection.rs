//! Connection life of the session task: what happens on CONNACK
//! (subscriptions, presence, twin, delivery notice) and when a connection
//! is lost or refused (in-flight bookkeeping, backoff, one log line per
//! change).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{Event, Outgoing, QoS, Request};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::clock::unix_seconds;

use super::backoff::Failure;
use super::failure::{classify, is_unreadable_packet};
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

    /// The broker sent nothing for 1.5 keep-alive intervals: the link is
    /// half-open (a blackhole drops our packets and theirs, with no FIN or
    /// RST). Drops the connection and returns the delay before the next
    /// attempt.
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
    pub(super) fn on_silent_link(&mut self) -> Duration {
        let keep_alive = self.keep_alive();
        let silent = self.last_incoming.elapsed();
        self.eventloop.clean();
        let message = format!(
            "no packet from {} for {:.1} s (keep-alive {} s): the link looks dead (half-open); \
             reconnecting",
            self.target,
            silent.as_secs_f32(),
            keep_alive.as_secs()
        );
        self.on_lost(Failure::Network, message, false)
    }

    /// Handles a lost or refused connection; returns the delay before the
    /// next attempt.
    pub(super) fn on_error(&mut self, err: &rumqttc::ConnectionError) -> Duration {
        let (failure, message) = classify(err, &self.target.to_string());
        self.on_lost(failure, message, is_unreadable_packet(err))
    }

    /// `unreadable`: tether dropped the connection itself over a packet it
    /// cannot read.
    fn on_lost(&mut self, failure: Failure, mut message: String, unreadable: bool) -> Duration {
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
        match was_connected {
            Some(at) if at.elapsed() < QUICK_DROP => {
                self.quick_drops += 1;
                self.unreadable_drops = if unreadable {
                    self.unreadable_drops + 1
                } else {
                    0
                };
            }
            Some(_) => {
                self.quick_drops = 0;
                self.unreadable_drops = 0;
                self.backoff.reset();
            }
            None => {}
        }
        if let Some(diagnosis) = quick_drop_diagnosis(
            self.quick_drops,
            self.unreadable_drops,
            self.handle.topics().device_id(),
        ) {
            message = format!("{message}; {diagnosis}");
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

/// What repeated quick drops mean, once there are enough of them: tether
/// refusing the same unreadable packet each time (the broker redelivers it
/// on every reconnect), or the hub closing the connection (another client
/// with our device id).
fn quick_drop_diagnosis(quick: u32, unreadable: u32, device_id: &str) -> Option<String> {
    if quick < QUICK_DROPS_TO_WARN {
        return None;
    }
    Some(if unreadable >= QUICK_DROPS_TO_WARN {
        format!(
            "this happened {unreadable} times right after connecting: the broker most likely \
             sends the same packet again on every reconnect (a queued QoS 1 message or a \
             retained one); remove it at the broker (clear the retained message or the \
             persistent session of {device_id:?})"
        )
    } else {
        format!(
            "the hub closed the connection {quick} times right after accepting it: another \
             client is probably connected with device id {device_id:?} (a hub allows one \
             connection per device)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_quick_drops_say_nothing_yet() {
        assert_eq!(quick_drop_diagnosis(QUICK_DROPS_TO_WARN - 1, 0, "d"), None);
    }

    #[test]
    fn drops_the_hub_caused_point_at_another_client() {
        let d = quick_drop_diagnosis(3, 0, "ctrl-1").unwrap();
        assert!(
            d.contains("another client") && d.contains("\"ctrl-1\""),
            "{d}"
        );
    }

    #[test]
    fn drops_tether_caused_over_an_unreadable_packet_say_so() {
        let d = quick_drop_diagnosis(3, 3, "ctrl-1").unwrap();
        assert!(
            d.contains("same packet again") && !d.contains("another client"),
            "{d}"
        );
        let mixed = quick_drop_diagnosis(4, 1, "ctrl-1").unwrap();
        assert!(mixed.contains("another client"), "{mixed}");
    }
}
