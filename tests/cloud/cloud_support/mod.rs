//! Helpers for the `cloud_*` areas: a `serve` instance started in-process,
//! a scripted fake device on the plain-broker topic scheme, and
//! problem+json checks.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tether_cloud::{serve, BrokerConfig, DeviceAuth, ServeConfig, ServeHandle};
use tokio_util::sync::CancellationToken;

/// How long any single wait may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// `mqtt://127.0.0.1:{port}` with TLS off allowed.
pub fn plain_broker(port: u16) -> BrokerConfig {
    let mut b = BrokerConfig::new(format!("mqtt://127.0.0.1:{port}"));
    b.allow_insecure = true;
    b
}

/// A running `serve` with its blob directory; stopped on drop.
pub struct Serve {
    pub handle: ServeHandle,
    pub stop: CancellationToken,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Serve {
    /// Anonymous API, no device auth, broker `broker`; `tweak` adjusts
    /// the rest. Waits until the broker connection is up unless `tweak`
    /// points it somewhere unreachable.
    pub async fn start(broker: BrokerConfig, tweak: impl FnOnce(&mut ServeConfig)) -> Serve {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg =
            ServeConfig::new(([127, 0, 0, 1], 0).into(), broker, dir.path().join("blobs"));
        cfg.auth.anonymous = true;
        cfg.device_auth = DeviceAuth::None;
        tweak(&mut cfg);
        let stop = CancellationToken::new();
        let handle = serve(cfg, stop.clone()).await.expect("serve starts");
        tether::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Serve {
            handle,
            stop,
            dir,
            http,
        }
    }

    /// The request URL for `device`, with `query` appended when given.
    pub fn url(&self, device: &str, query: &str) -> String {
        let base = format!(
            "{}/api/v1/devices/{device}/request",
            self.handle.public_url()
        );
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }

    /// A GET of `path` on `device`.
    pub async fn get(&self, device: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(device, ""))
            .header("Remote-Query", path)
            .send()
            .await
            .expect("HTTP request")
    }

    /// Waits until this instance has seen `device` online.
    pub async fn wait_online(&self, device: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.handle.device_online(device) != Some(true) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{device} never came online"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The problem+json body of `resp`, checking its content type and
/// `status`.
pub async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(ct, "application/problem+json");
    let v: Value = resp.json().await.expect("problem JSON");
    assert_eq!(v["status"], status);
    v
}

/// How a fake device answers a call: `(status, payload)`, or `None` to
/// stay silent.
pub type Script = Arc<dyn Fn(&[u8]) -> Option<(u16, Vec<u8>)> + Send + Sync>;

/// A device that is not tether: announces itself online (retained) and
/// answers calls by script.
pub struct FakeDevice {
    task: tokio::task::JoinHandle<()>,
}

impl FakeDevice {
    /// Connects as `id` to the broker's plain listener, subscribes to its
    /// method calls and publishes `{"online":true}` (retained).
    pub async fn start(port: u16, id: &str, script: Script) -> FakeDevice {
        let mut opts = MqttOptions::new(
            format!("fake-{id}-{}", uuid::Uuid::new_v4()),
            "127.0.0.1",
            port,
        );
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (c, mut eventloop) = AsyncClient::new(opts, 64);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let device = id.to_string();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(
                            format!("devices/{device}/methods/POST/#"),
                            QoS::AtLeastOnce,
                        );
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = c.try_publish(
                            format!("devices/{device}/status"),
                            QoS::AtLeastOnce,
                            true,
                            r#"{"online":true}"#,
                        );
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let rid = p
                            .topic
                            .rsplit_once("$rid=")
                            .map(|(_, r)| r.to_string())
                            .unwrap_or_default();
                        if let Some((status, body)) = script(&p.payload) {
                            let topic =
                                format!("devices/{device}/methods/res/{status}/?$rid={rid}");
                            let _ = c.try_publish(topic, QoS::AtLeastOnce, false, body);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("fake device online within 10 s")
            .expect("fake device task alive");
        FakeDevice { task }
    }
}

impl Drop for FakeDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sets (retained) or clears the presence of `id` as another client.
pub async fn set_presence(port: u16, id: &str, online: Option<bool>) {
    let cloud = tether_testkit::cloud(port, &[]).await;
    let payload = match online {
        Some(o) => format!(r#"{{"online":{o}}}"#),
        None => String::new(),
    };
    cloud
        .publish(&format!("devices/{id}/status"), payload, true)
        .await
        .expect("publish");
    // A round trip through the broker: once our own subscription sees the
    // message, the broker has stored it.
    let mut check = tether_testkit::cloud(port, &[&format!("devices/{id}/status")]).await;
    if online.is_some() {
        check
            .next_on(&format!("devices/{id}/status"), WAIT)
            .await
            .unwrap();
    }
}

/// A script answering every call with the Cloud Relay form of `body`.
pub fn answering(status: u16, content_type: &str, body: &str) -> Script {
    let answer = serde_json::json!({
        "status": status,
        "headers": {"Content-Type": content_type},
        "body": body,
    })
    .to_string()
    .into_bytes();
    Arc::new(move |_| Some((status, answer.clone())))
}
