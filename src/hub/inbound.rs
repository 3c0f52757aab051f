//! Incoming publishes: method calls, twin answers and patches, C2D messages.
//! Handlers run on their own tasks; the session task only dispatches.
//! Oversize or malformed messages are refused here (see [`super::refusal`]).

use rumqttc::{Publish, PublishTooLarge, QoS};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::methods::{C2dMessage, MethodCall, MethodResponse};
use super::options::MAX_PACKET_BYTES;
use super::properties;
use super::refusal::{is_json, MethodRefusal, Reason};
use super::session::Session;
use super::topics::Inbound;

impl Session {
    pub(super) fn on_publish(&mut self, p: Publish) {
        let topic = p.topic.clone();
        match self.handle.topics().classify(&topic) {
            Inbound::MethodCall { name, rid } => {
                self.ack(&p);
                self.on_method(name, rid, p.payload.to_vec());
            }
            Inbound::TwinResponse { status, rid } => {
                self.ack(&p);
                self.on_twin_response(status, &rid, &p.payload);
            }
            Inbound::DesiredPatch { version } => {
                self.ack(&p);
                debug!(?version, "desired properties patch");
                self.deliver_desired(&p, false);
            }
            Inbound::DesiredDocument => {
                self.ack(&p);
                self.deliver_desired(&p, true);
            }
            Inbound::CloudToDevice { properties } => self.on_c2d(p, properties),
            Inbound::Unknown => {
                self.ack(&p);
                debug!(%topic, "ignoring a message on an unexpected topic");
            }
        }
    }

    /// A PUBLISH over the packet limit, whose payload the codec discards
    /// unread: acknowledged at once (so the broker never sends it again),
    /// answered 413 when it is a method call, counted and logged once.
    pub(super) fn on_publish_too_large(&mut self, p: PublishTooLarge) {
        self.ack(&p.to_ack());
        let what = match self.handle.topics().classify(&p.topic) {
            Inbound::MethodCall { name, rid } => {
                let why = MethodRefusal::TooLarge {
                    size: p.size,
                    max: MAX_PACKET_BYTES,
                };
                let resp = self.router.refusal_answer(&name, &why);
                self.answer_soon(rid, resp);
                "direct-method call (answered 413)"
            }
            Inbound::TwinResponse { rid, .. } => {
                if self.twin_get.as_deref() == Some(rid.as_str()) {
                    self.twin_get = None;
                }
                "twin document (desired properties may be stale)"
            }
            Inbound::DesiredPatch { .. } => "desired-properties patch",
            Inbound::DesiredDocument => "desired-properties document",
            Inbound::CloudToDevice { .. } => "cloud-to-device message",
            Inbound::Unknown => "message on an unexpected topic",
        };
        self.refuse(
            Refused {
                reason: Reason::TooLarge,
                topic: &p.topic,
                size: p.size,
                retained: p.retain,
            },
            &format!("its payload was discarded unread (limit {MAX_PACKET_BYTES} bytes)"),
            what,
        );
    }

    /// Logs a refused message once, without its payload, then counts it
    /// (in that order, so whoever sees the count finds the line).
    fn refuse(&mut self, refused: Refused<'_>, why: &str, what: &str) {
        let after = if refused.retained {
            "acknowledged; the broker keeps it retained and sends it again on the next \
             connection: replace or clear it there"
        } else {
            "acknowledged, so it is not redelivered"
        };
        warn!(
            topic = %refused.topic,
            size = refused.size,
            reason = refused.reason.as_str(),
            "refused an inbound {what}: {why}; {after}"
        );
        self.machine.inbound_refused(refused.reason);
        self.publish_status();
    }

    /// Acknowledges a QoS 1 publish. A PUBACK is never dropped: with the
    /// request channel full (say, behind the answers to a burst of calls), a
    /// lost one would leave the broker's in-flight window full of messages
    /// we never acknowledged, and it would send us nothing more until the
    /// next reconnect. Waiting here would stall the event loop that drains
    /// the channel, so a task waits instead; there are at most as many as
    /// the broker's in-flight window, and it gives up if the connection
    /// changed meanwhile (the packet id would name another message).
    fn ack(&self, p: &Publish) {
        let client = &self.handle.shared.client;
        if p.qos == QoS::AtMostOnce || client.try_ack(p).is_ok() {
            return;
        }
        let client = client.clone();
        let handle = self.handle.clone();
        let connects = self.machine.status().connects;
        let mut ack = Publish::new(p.topic.clone(), p.qos, Vec::new());
        ack.pkid = p.pkid;
        tokio::spawn(async move {
            if handle.status().connects == connects {
                if let Err(e) = client.ack(&ack).await {
                    debug!(error = %e, "PUBACK not sent: the session stopped");
                }
            }
        });
    }

    /// Sends an answer the session decided itself (503, 413) from a task,
    /// since the request channel may be full. The tasks waiting are bounded
    /// ([`super::session::ANSWERS_WAITING`]): beyond that the link cannot even carry the
    /// answers, and the call is left to the hub's timeout.
    fn answer_soon(&self, rid: String, resp: MethodResponse) {
        let Ok(permit) = self.answers_waiting.clone().try_acquire_owned() else {
            debug!(%rid, status = resp.status, "answer dropped: too many waiting to be sent");
            return;
        };
        let handle = self.handle.clone();
        tokio::spawn(async move {
            if let Err(e) = handle.respond(&rid, &resp).await {
                debug!(%rid, error = %e, "answer not sent: the session stopped");
            }
            drop(permit);
        });
    }

    fn on_method(&mut self, name: String, rid: String, payload: Vec<u8>) {
        let handle = self.handle.clone();
        let Ok(permit) = self.method_slots.clone().try_acquire_owned() else {
            warn!(method = %name, %rid, "too many direct-method calls in progress; answering 503");
            let busy =
                MethodResponse::error(503, "busy", "too many calls in progress, retry later");
            self.answer_soon(rid, busy);
            return;
        };
        let call = MethodCall {
            name,
            rid,
            connection: self.machine.connection(),
            payload,
        };
        let router = self.router.clone();
        tokio::spawn(async move {
            let rid = call.rid.clone();
            let name = call.name.clone();
            let resp = router.dispatch(call).await;
            drop(permit);
            if resp.status == 404 && !router.method_names().contains(&name) {
                info!(method = %name, %rid, "unknown direct method answered 404");
            }
            if let Err(e) = handle.respond(&rid, &resp).await {
                warn!(method = %name, %rid, error = %e, "could not send the method response");
            }
        });
    }

    fn on_twin_response(&mut self, status: u16, rid: &str, body: &[u8]) {
        if self.twin_get.as_deref() == Some(rid) {
            self.twin_get = None;
            if status == 200 {
                match serde_json::from_slice::<Value>(body) {
                    Ok(twin) => {
                        let desired = twin.get("desired").cloned().unwrap_or(Value::Null);
                        self.router.deliver_desired(&desired, true);
                    }
                    Err(e) => self.refuse(
                        Refused {
                            reason: Reason::NotJson,
                            topic: &format!("$iothub/twin/res/{status}/?$rid={rid}"),
                            size: body.len(),
                            retained: false,
                        },
                        &format!("it is not JSON ({e})"),
                        "twin document (desired properties may be stale)",
                    ),
                }
            } else {
                warn!(
                    status,
                    "the hub refused the twin GET; desired properties may be stale"
                );
            }
        } else if status >= 400 {
            warn!(status, %rid, "the hub refused a reported-properties update");
        }
    }

    fn deliver_desired(&mut self, p: &Publish, full: bool) {
        if p.payload.is_empty() {
            return;
        }
        match serde_json::from_slice::<Value>(&p.payload) {
            Ok(doc) => self.router.deliver_desired(&doc, full),
            Err(e) => self.refuse(
                Refused::not_json(p),
                &format!("it is not JSON ({e})"),
                "desired-properties document",
            ),
        }
    }

    /// A QoS 1 C2D message is acknowledged only after its handler took it;
    /// one that is not JSON is refused before any handler sees it.
    fn on_c2d(&mut self, p: Publish, props: Vec<(String, Option<String>)>) {
        if !is_json(&p.payload) {
            self.ack(&p);
            self.refuse(
                Refused::not_json(&p),
                "its body is not JSON",
                "cloud-to-device message",
            );
            return;
        }
        let kind = properties::get(&props, "type").map(str::to_string);
        let Some(handler) = self.router.c2d_handler(kind.as_deref()) else {
            info!(kind = ?kind, "no handler for this cloud-to-device message; acknowledging it");
            self.ack(&p);
            return;
        };
        let client = self.handle.shared.client.clone();
        let msg = C2dMessage {
            properties: props,
            payload: p.payload.to_vec(),
        };
        // The cloud's message id lets an operator find the refused message
        // on the service side.
        let message_id = properties::get(&msg.properties, "$.mid").map(str::to_string);
        tokio::spawn(async move {
            if let Err(e) = handler(msg).await {
                warn!(kind = ?kind, message_id = ?message_id, error = %e, "a cloud-to-device message was refused");
            }
            let _ = client.ack(&p).await;
        });
    }
}

/// What is logged and counted about a refused message (never its payload).
struct Refused<'a> {
    reason: Reason,
    topic: &'a str,
    size: usize,
    retained: bool,
}

impl<'a> Refused<'a> {
    fn not_json(p: &'a Publish) -> Self {
        Refused {
            reason: Reason::NotJson,
            topic: &p.topic,
            size: p.payload.len(),
            retained: p.retain,
        }
    }
}
