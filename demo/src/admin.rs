//! tether's admin API as the demo reads it: the outbox counters and
//! `/healthz`.

use std::net::SocketAddr;

use serde_json::Value;
use tether_outbox::Stats;

use super::error::DemoError;

/// A client for one tether's admin API.
pub struct Admin {
    addr: SocketAddr,
    token: String,
    http: reqwest::Client,
}

impl Admin {
    /// The API on `addr`, with the bearer `token`, over `http`.
    pub fn new(addr: SocketAddr, token: String, http: reqwest::Client) -> Admin {
        Admin { addr, token, http }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// tether's outbox counters from its admin API.
    pub async fn outbox_stats(&self) -> Result<Stats, DemoError> {
        let url = format!("http://{}/v1/outbox/stats", self.addr);
        let resp = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| DemoError::Http(format!("admin API: {e}")))?;
        resp.json::<Stats>()
            .await
            .map_err(|e| DemoError::Http(format!("admin API stats: {e}")))
    }

    /// tether's admin `/healthz` document (200 or 503 alike).
    pub async fn health(&self) -> Result<Value, DemoError> {
        let url = format!("http://{}/healthz", self.addr);
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| DemoError::Http(format!("admin API: {e}")))?;
        resp.json()
            .await
            .map_err(|e| DemoError::Http(format!("admin API healthz: {e}")))
    }

    /// tether's hub state from its admin `/healthz`.
    pub async fn hub_state(&self) -> Result<String, DemoError> {
        let doc = self.health().await?;
        Ok(doc["hub"]["state"]
            .as_str()
            .unwrap_or("unknown")
            .to_string())
    }

    /// Whether the bridge reports the MCU link up (afLib's boot done).
    pub async fn mcu_link_up(&self) -> Result<bool, DemoError> {
        let doc = self.health().await?;
        Ok(doc["components"]["bridge"]["details"]["linkUp"] == true)
    }
}
