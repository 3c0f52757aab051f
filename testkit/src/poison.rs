//! Poison inbound messages (issue 16): a broker that passes messages of
//! any size, and a cloud-side publisher for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::{Broker, BrokerOptions};

/// A Mosquitto that accepts messages of any size (`message_size_limit 0`)
/// from user `dev1` with password `s3cret`, and queues up to 5,000 for an
/// offline session (room for a 1,000-call burst).
pub fn poison_broker() -> Broker {
    Broker::start(
        BrokerOptions::new()
            .user("dev1", "s3cret")
            .extra_config("message_size_limit 0\nmax_queued_messages 5000"),
    )
}

/// A JSON document of about `size` bytes.
pub fn big_json(size: usize) -> Vec<u8> {
    serde_json::json!({ "pad": "x".repeat(size) })
        .to_string()
        .into_bytes()
}

/// Publishes one message of any size from a cloud-side client (QoS 1) to
/// the broker's plain listener on `port`, returning once the broker
/// acknowledged it; panics naming the topic when it cannot.
pub async fn publish_big(port: u16, topic: &str, payload: Vec<u8>, retain: bool) {
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let id = format!(
        "big-{}-{}",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::Relaxed)
    );
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    let limit = payload.len() + 64 * 1024;
    opts.set_max_packet_size(limit, limit);
    let (client, mut eventloop) = AsyncClient::new(opts, 4);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .expect("queued");
    let acked = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("publishing {topic}: {e}"),
            }
        }
    })
    .await;
    acked.expect("the broker acknowledged the big publish");
    let _ = client.disconnect().await;
}
