//! The cloneable face of the hub session: publish telemetry, answer methods,
//! report properties, watch the connection. It never touches the event loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, ClientError, QoS};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::config::{HubConfig, HubEndpoint};

use super::credentials::CredentialSource;
use super::machine::{ConnState, HubStatus};
use super::methods::MethodResponse;
use super::options::{self, OptionsError, Target};
use super::properties;
use super::topics::{Scheme, Topics};
use super::tracker::{Queued, Token};

/// One device-to-cloud message.
#[derive(Debug, Clone)]
pub(crate) struct Telemetry {
    /// `$.mid`: set once when the message was accepted, kept across retries
    /// so receivers can de-duplicate.
    pub(crate) message_id: String,
    /// The `type` property (`attribute`, `relay-schedule`, ...).
    pub(crate) message_type: String,
    /// JSON body, shared with the publishes made from it.
    pub(crate) payload: Bytes,
    /// Custom properties after the standard ones.
    pub(crate) properties: Vec<(String, String)>,
}

impl Telemetry {
    /// The property bag, exactly
    /// `%24.mid={id}&%24.ct=application%2Fjson&%24.ce=utf-8&type={type}[&...]`.
    pub(crate) fn property_bag(&self) -> String {
        let standard = [
            ("$.mid", self.message_id.as_str()),
            ("$.ct", "application/json"),
            ("$.ce", "utf-8"),
            ("type", self.message_type.as_str()),
        ];
        let custom = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        properties::encode(standard.into_iter().chain(custom))
    }
}

/// A telemetry publish built by [`HubHandle::prepare`], ready to be sent as
/// often as needed.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    topic: String,
    payload: Bytes,
}

impl Prepared {
    /// Payload bytes.
    pub(crate) fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// A publish with no topic or payload, for tests of what holds them.
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        Prepared {
            topic: String::new(),
            payload: Bytes::new(),
        }
    }
}

/// A publish could not be handed to the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PublishError {
    /// The session has stopped (shutdown).
    #[error("the hub session has stopped")]
    Closed,
    /// Over the hub's packet limit.
    #[error("message of {size} bytes exceeds the hub's limit of {max} bytes")]
    TooLarge {
        /// Payload plus topic size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

pub(super) struct Shared {
    pub client: AsyncClient,
    pub queued: Queued,
    pub topics: Topics,
    pub status: watch::Receiver<HubStatus>,
    pub reported: Mutex<Map<String, Value>>,
    /// Set before a deliberate disconnect (token renewal, new config): the
    /// next connection attempt is immediate and not a failure.
    pub reconnect_now: AtomicBool,
    /// A configuration waiting to be applied at the next connect.
    pub next_config: Mutex<Option<NextConfig>>,
    /// True while the session must not connect (the hub is being assigned
    /// by DPS): see `hold.rs`.
    pub held: watch::Sender<bool>,
}

/// What [`HubHandle::reconfigure`] hands to the session.
pub(super) struct NextConfig {
    pub options: rumqttc::MqttOptions,
    pub creds: CredentialSource,
    pub target: Target,
    pub connect_timeout: Duration,
}

/// A new hub configuration cannot be applied without a restart.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconfigureError {
    /// The device identity or hub kind changed.
    #[error("the hub identity changed (client id {old:?} -> {new:?} or hub kind): restart tether to apply it")]
    IdentityChanged {
        /// Current client id.
        old: String,
        /// Configured client id.
        new: String,
    },
    /// TLS files or proxy setting unusable.
    #[error(transparent)]
    Options(#[from] OptionsError),
}

impl Shared {
    fn client_id(&self) -> String {
        match self.topics.module_id() {
            Some(m) => format!("{}/{m}", self.topics.device_id()),
            None => self.topics.device_id().to_string(),
        }
    }
}

/// Handle to the hub session. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HubHandle {
    pub(super) shared: Arc<Shared>,
}

/// How long to wait before retrying a full request channel.
const FULL_RETRY: Duration = Duration::from_millis(2);

impl HubHandle {
    /// The topic scheme in use.
    pub(crate) fn topics(&self) -> &Topics {
        &self.shared.topics
    }

    /// A snapshot of the connection status.
    pub(crate) fn status(&self) -> HubStatus {
        self.shared.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub(crate) fn watch_status(&self) -> watch::Receiver<HubStatus> {
        self.shared.status.clone()
    }

    /// Builds the publish for `msg` once (topic with its property bag,
    /// payload shared, not copied), so sending it again after a lost
    /// connection costs nothing more.
    ///
    /// # Errors
    /// [`PublishError::TooLarge`] over the hub's limit.
    pub(crate) fn prepare(&self, msg: &Telemetry) -> Result<Prepared, PublishError> {
        let topic = self.shared.topics.telemetry(&msg.property_bag());
        let size = topic.len() + msg.payload.len();
        let max = super::options::MAX_PACKET_BYTES - 16;
        if size > max {
            return Err(PublishError::TooLarge { size, max });
        }
        Ok(Prepared {
            topic,
            payload: msg.payload.clone(),
        })
    }

    /// Publishes a prepared telemetry message at QoS 1. When `token` is
    /// given, its PUBACK is reported as [`super::Delivery::Acked`]. Waits
    /// while the request channel is full; never blocks the session task.
    ///
    /// # Errors
    /// [`PublishError::Closed`] after shutdown.
    pub(crate) async fn publish(
        &self,
        p: &Prepared,
        token: Option<Token>,
    ) -> Result<(), PublishError> {
        self.publish_qos1(&p.topic, &p.payload, false, token).await
    }

    /// Applies a changed hub configuration (SIGHUP): new credentials, host,
    /// TLS files or timeouts take effect by reconnecting now.
    ///
    /// # Errors
    /// When the identity changed (a restart is needed) or TLS files are
    /// unusable; the running session is left untouched.
    pub(crate) fn reconfigure(&self, cfg: &HubConfig) -> Result<(), ReconfigureError> {
        let creds = CredentialSource::new(&cfg.endpoint, cfg.sas_ttl);
        let old = self.shared.client_id();
        let same_kind = matches!(
            (&cfg.endpoint, self.shared.topics.scheme()),
            (HubEndpoint::Azure(_), Scheme::Azure) | (HubEndpoint::Broker(_), Scheme::Plain)
        );
        if creds.client_id() != old || !same_kind {
            return Err(ReconfigureError::IdentityChanged {
                old,
                new: creds.client_id().to_string(),
            });
        }
        let mut opts = options::build(cfg, creds.client_id(), &self.shared.topics)?;
        opts.set_credentials("", "");
        *self
            .shared
            .next_config
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(NextConfig {
            options: opts,
            creds,
            target: options::target(cfg),
            connect_timeout: cfg.connect_timeout,
        });
        // While disconnected the new config simply applies at the next
        // attempt; a queued DISCONNECT would only kill that new connection.
        if self.status().is_connected() {
            self.shared.reconnect_now.store(true, Ordering::SeqCst);
            if self.shared.client.try_disconnect().is_err() {
                self.shared.reconnect_now.store(false, Ordering::SeqCst);
                tracing::debug!(
                    "disconnect not queued; the new config applies at the next reconnect"
                );
            }
        }
        Ok(())
    }

    /// Answers a direct method (QoS 0, as the hub SDKs do).
    ///
    /// # Errors
    /// [`PublishError::Closed`] after shutdown.
    pub(crate) async fn respond(
        &self,
        rid: &str,
        resp: &MethodResponse,
    ) -> Result<(), PublishError> {
        let topic = self.shared.topics.method_response(resp.status, rid);
        self.shared
            .client
            .publish(topic, QoS::AtMostOnce, false, resp.body.clone())
            .await
            .map_err(|_| PublishError::Closed)
    }

    /// Merges `patch` into the reported properties (`null` deletes a key)
    /// and sends it when connected; the whole document is sent again on
    /// every reconnect.
    ///
    /// # Errors
    /// [`PublishError::Closed`] after shutdown.
    pub(crate) async fn report(&self, patch: Map<String, Value>) -> Result<(), PublishError> {
        let full = {
            let mut doc = self
                .shared
                .reported
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            merge(&mut doc, &patch);
            doc.clone()
        };
        if !self.status().is_connected() {
            return Ok(());
        }
        match self.shared.topics.scheme() {
            Scheme::Azure => {
                let topic = self.shared.topics.twin_reported(&next_rid());
                self.shared
                    .client
                    .publish(
                        topic,
                        QoS::AtMostOnce,
                        false,
                        Value::Object(patch).to_string(),
                    )
                    .await
                    .map_err(|_| PublishError::Closed)
            }
            Scheme::Plain => {
                let topic = self.shared.topics.twin_reported("");
                let body = Value::Object(full).to_string().into_bytes();
                self.publish_qos1(&topic, &body.into(), true, None).await
            }
        }
    }

    async fn publish_qos1(
        &self,
        topic: &str,
        payload: &Bytes,
        retain: bool,
        token: Option<Token>,
    ) -> Result<(), PublishError> {
        loop {
            let sent = self.shared.queued.push_with(token, || {
                self.shared.client.try_publish_bytes(
                    topic,
                    QoS::AtLeastOnce,
                    retain,
                    payload.clone(),
                )
            });
            match sent {
                Ok(()) => return Ok(()),
                Err(ClientError::TryRequest(_) | ClientError::Request(_)) => {
                    if self.status().state == ConnState::Stopped {
                        return Err(PublishError::Closed);
                    }
                    tokio::time::sleep(FULL_RETRY).await;
                }
            }
        }
    }
}

/// JSON merge of reported properties: `null` removes a key, objects merge.
pub(super) fn merge(doc: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match (v, doc.get_mut(k)) {
            (Value::Null, _) => {
                doc.remove(k);
            }
            (Value::Object(p), Some(Value::Object(d))) => merge(d, p),
            _ => {
                doc.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Request ids for twin requests: unique within the process.
pub(super) fn next_rid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RID: AtomicU64 = AtomicU64::new(1);
    format!("{:x}", RID.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn telemetry_property_bag_is_exactly_the_pinned_form() {
        let t = Telemetry {
            message_id: "5b0c1e2a-0000-4000-8000-000000000001".into(),
            message_type: "attribute".into(),
            payload: Bytes::new(),
            properties: vec![("schedule".into(), "every 5m".into())],
        };
        assert_eq!(
            t.property_bag(),
            "%24.mid=5b0c1e2a-0000-4000-8000-000000000001&%24.ct=application%2Fjson\
             &%24.ce=utf-8&type=attribute&schedule=every%205m"
        );
    }

    #[test]
    fn merge_deletes_nulls_and_merges_objects() {
        let mut doc = json!({"a": 1, "b": {"x": 1, "y": 2}})
            .as_object()
            .unwrap()
            .clone();
        let patch = json!({"a": null, "b": {"y": 3}, "c": true});
        merge(&mut doc, patch.as_object().unwrap());
        assert_eq!(
            Value::Object(doc),
            json!({"b": {"x": 1, "y": 3}, "c": true})
        );
    }
}
