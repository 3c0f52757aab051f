//! Device credentials for the upload endpoint: with `device_auth =
//! "broker"` a device proves itself with the credentials it gives the
//! broker, checked by one MQTT CONNECT and cached for a while.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use rumqttc::{AsyncClient, ConnectionError, Event, Packet};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::blobs::safe_path;
use super::broker::options;
use super::config::{BrokerConfig, DeviceAuth};
use tether_protocol::topics::cloud::is_topic_level;

/// How long an accepted device credential is trusted without asking the
/// broker again.
const CREDENTIAL_TTL: Duration = Duration::from_secs(300);
const CREDENTIAL_CACHE: usize = 1024;

/// Checks device credentials for the upload endpoint.
pub(crate) struct DeviceCheck {
    mode: DeviceAuth,
    broker: BrokerConfig,
    /// Digest of `user:password` → when the broker accepted it.
    accepted: Mutex<HashMap<[u8; 32], Instant>>,
}

impl DeviceCheck {
    pub(crate) fn new(mode: DeviceAuth, broker: BrokerConfig) -> Self {
        DeviceCheck {
            mode,
            broker,
            accepted: Mutex::new(HashMap::new()),
        }
    }

    /// Ok, or the status to answer (401, 503).
    pub(crate) async fn check(&self, device: &str, headers: &HeaderMap) -> Result<(), StatusCode> {
        if !is_topic_level(device) || !safe_path(device) {
            return Err(StatusCode::NOT_FOUND);
        }
        if self.mode == DeviceAuth::None {
            return Ok(());
        }
        let (user, password) = basic(headers).ok_or(StatusCode::UNAUTHORIZED)?;
        // tether's plain-broker convention: the username is the device id,
        // so accepted credentials also prove the identity.
        if user != device {
            return Err(StatusCode::UNAUTHORIZED);
        }
        let key: [u8; 32] = Sha256::digest(format!("{user}:{password}")).into();
        let fresh = |at: &Instant| at.elapsed() < CREDENTIAL_TTL;
        if self.cache().get(&key).is_some_and(fresh) {
            return Ok(());
        }
        self.ask_broker(&user, &password).await?;
        let mut cache = self.cache();
        if cache.len() >= CREDENTIAL_CACHE {
            cache.retain(|_, at| fresh(at));
            if cache.len() >= CREDENTIAL_CACHE {
                cache.clear();
            }
        }
        cache.insert(key, Instant::now());
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.accepted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One MQTT CONNECT with the credentials, under a throwaway client id
    /// so the device's own session is not taken over.
    async fn ask_broker(&self, user: &str, password: &str) -> Result<(), StatusCode> {
        let mut cfg = self.broker.clone();
        cfg.username = Some(user.to_string());
        cfg.password = Some(tether_protocol::Secret::new(password));
        let id = format!("tether-cloud-auth-{}", uuid::Uuid::new_v4().simple());
        let opts = options(&cfg, &id).map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        let (client, mut eventloop) = AsyncClient::new(opts, 4);
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(_)) => {
                        return Err(StatusCode::UNAUTHORIZED)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check device credentials with the broker");
                        return Err(StatusCode::SERVICE_UNAVAILABLE);
                    }
                }
            }
        })
        .await
        .unwrap_or(Err(StatusCode::SERVICE_UNAVAILABLE));
        if outcome.is_ok() {
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        }
        outcome
    }
}

/// `Authorization: Basic base64(user:password)`.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}
