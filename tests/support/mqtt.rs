//! A cloud-side MQTT client for tests: plays the hub service (publishes
//! method calls, reads answers and telemetry) over the broker's plain
//! listener.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;

/// A connected test client with a queue of received publishes.
pub struct Cloud {
    pub client: AsyncClient,
    rx: mpsc::Receiver<Publish>,
    task: tokio::task::JoinHandle<()>,
}

impl Cloud {
    /// Connects anonymously to `127.0.0.1:port` and subscribes to `filters`.
    pub async fn connect(port: u16, filters: &[&str]) -> Cloud {
        let id = format!("cloud-{}", uuid::Uuid::new_v4());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(512 * 1024, 512 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (tx, rx) = mpsc::channel(1024);
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for f in filters {
            client
                .subscribe(*f, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            tokio::time::timeout(Duration::from_secs(5), ready_rx.recv())
                .await
                .expect("SUBACK within 5 s");
        }
        Cloud { client, rx, task }
    }

    /// Publishes `payload` on `topic`.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("publish");
    }

    /// The next publish whose topic starts with `prefix`, within `timeout`.
    pub async fn next_on(&mut self, prefix: &str, timeout: Duration) -> Publish {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(p)) if p.topic.starts_with(prefix) => return p,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("no publish on {prefix}* within {timeout:?}"),
            }
        }
    }

    /// Whether a publish on `prefix` arrives within `timeout`.
    pub async fn maybe_next_on(&mut self, prefix: &str, timeout: Duration) -> Option<Publish> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(p)) if p.topic.starts_with(prefix) => return Some(p),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}
