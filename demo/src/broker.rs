//! The demo's MQTT broker: rumqttd inside this process, one plain MQTT 3.1.1
//! listener on loopback. It serves the plain-broker topic scheme
//! (`devices/{id}/...`); rumqttd refuses `$`-topics, which that scheme
//! never uses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::time::Instant;

use super::args::free_addr;
use super::error::DemoError;

/// Packets up to this size: tether's outbox batches stay under 256 KiB.
const MAX_PAYLOAD: usize = 320 * 1024;
/// How long the broker thread may take to listen.
const START_WAIT: Duration = Duration::from_secs(5);

/// Starts rumqttd on `addr` (port 0: a free one) and returns once it
/// accepts connections.
///
/// rumqttd has no shutdown API: its threads live until the process exits,
/// which is when the demo is done with it.
///
/// # Errors
/// [`DemoError::Broker`] when no port is free or it does not come up.
pub async fn start(addr: SocketAddr) -> Result<SocketAddr, DemoError> {
    let addr = free_addr(addr)
        .await
        .map_err(|e| DemoError::Broker(format!("no free port: {e}")))?;
    let server = ServerSettings {
        name: "demo".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        router: RouterConfig {
            max_connections: 32,
            max_outgoing_packet_count: 200,
            max_segment_size: 1 << 20,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("demo".to_string(), server)])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            // Blocks while the listener runs; returns only if it failed.
            if let Err(e) = rumqttd::Broker::new(config).start() {
                tracing::error!(error = %e, "the demo broker stopped");
            }
        })
        .map_err(|e| DemoError::Broker(format!("cannot start its thread: {e}")))?;
    let deadline = Instant::now() + START_WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(DemoError::Broker(format!(
                "not listening on {addr} after {START_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(addr)
}
