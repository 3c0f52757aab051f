//! The cloud's view of telemetry: a subscriber on the broker (directly, not
//! through the link cutter) that records every attribute message tether
//! delivers, so the demo can count what arrived against what was accepted.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::DemoError;

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

/// A running subscriber.
pub struct Observer {
    arrivals: mpsc::UnboundedReceiver<Arrived>,
    /// Distinct message ids seen: a message sent again after a lost
    /// PUBACK counts once.
    ids: Arc<Mutex<HashSet<String>>>,
}

impl Observer {
    /// Subscribes to `devices/{device}/messages/events/#` on `broker` and
    /// returns once the subscription is acknowledged.
    ///
    /// # Errors
    /// [`DemoError::Observer`] when the subscription is not in place
    /// within a few seconds.
    pub async fn start(
        broker: SocketAddr,
        device: &str,
        stop: CancellationToken,
    ) -> Result<Observer, DemoError> {
        let mut opts = MqttOptions::new(
            "demo-cloud-observer",
            broker.ip().to_string(),
            broker.port(),
        );
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(512 * 1024, 512 * 1024);
        let (client, mut events) = AsyncClient::new(opts, 64);
        let filter = format!("devices/{device}/messages/events/#");
        let (subscribed, mut ready) = watch::channel(false);
        let (tx, arrivals) = mpsc::unbounded_channel();
        let ids = Arc::new(Mutex::new(HashSet::new()));
        let seen = ids.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => return,
                    e = events.poll() => e,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // Clean session: subscribe on every connection.
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        for a in parse(&p.topic, &p.payload, &seen) {
                            let _ = tx.send(a);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|s| *s))
            .await
            .map_err(|_| DemoError::Observer("no SUBACK within 5 s".into()))?
            .map_err(|_| DemoError::Observer("the subscriber stopped".into()))?;
        Ok(Observer { arrivals, ids })
    }

    /// Distinct attribute messages delivered so far.
    pub fn delivered(&self) -> usize {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The next new arrival within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Arrived> {
        tokio::time::timeout(wait, self.arrivals.recv())
            .await
            .ok()
            .flatten()
    }

    /// Drops arrivals not yet read.
    pub fn drain(&mut self) {
        while self.arrivals.try_recv().is_ok() {}
    }
}

/// The attribute messages in one publish (one object, or an array when
/// the outbox batches), each reported the first time its id is seen.
fn parse(topic: &str, payload: &[u8], seen: &Mutex<HashSet<String>>) -> Vec<Arrived> {
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
