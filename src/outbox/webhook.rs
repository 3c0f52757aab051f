//! A webhook sink: Afero-style HTTPS POST of each message's JSON to a
//! partner endpoint, with Basic auth, custom headers and query parameters,
//! and an optional CA file (for private or self-signed CAs). A 2xx answer
//! delivers the message; anything else is retried with backoff. Each
//! webhook has its own cursor, so a dead endpoint delays only itself.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use tether_outbox::message::Stored;
use tether_outbox::{Core, SinkId};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
pub(crate) use crate::config::WebhookConfig;
use crate::service::Beat;

/// A webhook could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WebhookError {
    /// The URL or a header is malformed.
    #[error("webhook {name}: {reason}")]
    Invalid {
        /// The webhook.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The CA file is unusable.
    #[error("webhook {name}: {source}")]
    Tls {
        /// The webhook.
        name: String,
        /// Why.
        source: crate::tls::TlsError,
    },
}

/// First and largest retry delay (each jittered, see [`Backoff`]).
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub(crate) struct Webhook {
    client: reqwest::Client,
    url: Url,
    cfg: WebhookConfig,
}

impl Webhook {
    pub(crate) fn new(cfg: WebhookConfig) -> Result<Self, WebhookError> {
        let invalid = |reason: String| WebhookError::Invalid {
            name: cfg.name.clone(),
            reason,
        };
        let mut url = Url::parse(&cfg.url).map_err(|e| invalid(format!("url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("url: the scheme must be https (or http)".into()));
        }
        if !cfg.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(cfg.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| invalid(format!("header name {k:?}")))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| invalid(format!("header {k}: bad value")))?;
            headers.insert(name, value);
        }
        crate::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .default_headers(headers);
        if url.scheme() == "https" {
            let tls =
                crate::tls::client_config(cfg.ca_file.as_deref(), None).map_err(|source| {
                    WebhookError::Tls {
                        name: cfg.name.clone(),
                        source,
                    }
                })?;
            builder = builder.tls_backend_preconfigured((*tls).clone());
        }
        let client = builder.build().map_err(|e| invalid(e.to_string()))?;
        Ok(Self { client, url, cfg })
    }

    /// One attempt; `Err` carries the failure text (`503 Service Unavailable`).
    async fn post(&self, msg: &Stored) -> Result<(), String> {
        let mut req = self.client.post(self.url.clone()).body(msg.body.clone());
        if let Some(user) = &self.cfg.username {
            req = req.basic_auth(
                user,
                self.cfg.password.as_ref().map(|p| p.expose().to_string()),
            );
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => {
                let s = resp.status();
                Err(
                    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
                        .trim_end()
                        .to_string(),
                )
            }
            Err(e) if e.is_timeout() => Err(format!("no answer within {:?}", self.cfg.timeout)),
            Err(e) => Err(format!("request failed: {}", error_chain(&e))),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

pub(crate) async fn run(
    hook: Webhook,
    core: Arc<Core>,
    sink: SinkId,
    beat: Beat,
    shutdown: CancellationToken,
) {
    let mut last_read = core.cursor(sink).saturating_sub(1);
    let mut durable = core.durable();
    let name = hook.cfg.name.clone();
    loop {
        beat.beat_expecting(BACKOFF_MAX + hook.cfg.timeout * 2);
        let msgs = match core.read(sink, last_read, 1) {
            Ok(m) => m,
            Err(e) => {
                warn!(webhook = %name, error = %e, "cannot read the outbox");
                Vec::new()
            }
        };
        let Some(msg) = msgs.into_iter().next() else {
            tokio::select! {
                r = durable.changed() => if r.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = shutdown.cancelled() => return,
            }
            continue;
        };
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        // Retry until delivered, or until expiry made it a failure.
        while !core.is_done(sink, msg.seq) {
            let failed = backoff.attempts();
            if failed > 0 {
                core.count_duplicates(sink, 1);
            }
            let result = tokio::select! {
                r = hook.post(&msg) => r,
                () = shutdown.cancelled() => return,
            };
            beat.beat_expecting(BACKOFF_MAX + hook.cfg.timeout * 2);
            match result {
                Ok(()) => {
                    if failed > 0 {
                        info!(webhook = %name, attempts = failed + 1, "webhook delivering again");
                    }
                    core.delivered(sink, &[(msg.seq, msg.encoded_len())]);
                    break;
                }
                Err(e) => {
                    if failed == 0 {
                        warn!(webhook = %name, error = %e, "webhook delivery failed; retrying with backoff");
                    }
                    core.set_error(sink, Some(e));
                    let delay = backoff.next_delay(&mut rand::thread_rng());
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
        last_read = msg.seq;
    }
}
