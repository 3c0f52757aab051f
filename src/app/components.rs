//! Building each component from its config section and connecting it to
//! the others: relay and bridge to the router, schedule results and MCU
//! updates to the outbox, the outbox to the hub.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tether_outbox::message::NewMessage;
use tether_outbox::{Intake, Outbox};
use tether_protocol::time::unix_seconds;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::bridge::{AttributeChange, Upstream};
use crate::certinfo;
use crate::clock::SharedClock;
use crate::config::{AzureAuth, Config, HubEndpoint};
use crate::hub::credentials::CredentialSource;
use crate::hub::methods::BoxFuture;
use crate::hub::{Delivery, HubHandle, Router};
use crate::outbox::{spawn_hub_sink, spawn_upkeep, spawn_webhook, HubSinkOptions};
use crate::relay::{self, EndpointAuth, Relay, RelayError, Uploader};
use crate::service::Liveness;

/// Scheduled results waiting for the outbox; a full queue delays the
/// schedule rather than dropping its result.
const SCHEDULE_QUEUE: usize = 16;

/// The relay with the upload path that fits the hub: the hub's own file
/// upload on Azure, `relay.upload_url` on a plain broker, none otherwise.
pub(super) fn relay(cfg: &Config, clock: &SharedClock) -> Result<Arc<Relay>, RelayError> {
    let credentials = CredentialSource::new(&cfg.hub.endpoint, cfg.hub.sas_ttl);
    let uploader = match (&cfg.hub.endpoint, &cfg.relay.upload_url) {
        // First start with [hub.provisioning]: the hub is not known yet, so
        // there is no file upload until a restart finds the cached one.
        (HubEndpoint::Azure(a), _) if !a.is_assigned() => Uploader::Disabled,
        (HubEndpoint::Azure(a), _) => Uploader::Azure {
            host_name: a.host_name.clone(),
            device_id: a.device_id.clone(),
            module_id: a.module_id.clone(),
            credentials,
            clock: clock.clone(),
            ca_file: cfg.hub.ca_file.clone(),
        },
        (HubEndpoint::Broker(b), Some(url)) => Uploader::Endpoint {
            base_url: url.clone(),
            device_id: b.device_id.clone(),
            auth: EndpointAuth::Device {
                credentials,
                clock: clock.clone(),
            },
            ca_file: cfg.hub.ca_file.clone(),
        },
        (HubEndpoint::Broker(_), None) => Uploader::Disabled,
    };
    Ok(Arc::new(
        Relay::new(&cfg.relay, &cfg.controller, uploader)?.with_clock(clock.clone()),
    ))
}

/// Routes the relay's direct method (default `RestApi`) to it.
pub(super) fn register_relay(router: &mut Router, relay: &Arc<Relay>) {
    let r = relay.clone();
    router.method(relay.method_name(), move |call| {
        let r = r.clone();
        async move { r.handle(call).await }
    });
    // A call too large to read is answered in the relay's own shape, as the
    // Cloud Relay contract answers oversize: 413 `payload_too_large`.
    router.method_refusal(relay.method_name(), |why| {
        relay::response::failure(&relay::Failure::TooLarge(why.to_string()))
    });
}

/// Scheduled relay calls, their results accepted by the outbox (type
/// `relay-schedule`) so results taken while offline are delivered later.
pub(super) fn schedules(
    cfg: &Config,
    relay: Arc<Relay>,
    outbox: &Outbox,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel(SCHEDULE_QUEUE);
    let runner = relay::spawn_schedules(relay, &cfg.relay.schedules, tx, shutdown);
    let intake = outbox.intake.clone();
    tokio::spawn(async move {
        while let Some(result) = rx.recv().await {
            let msg = NewMessage::json("relay-schedule", &result.to_message());
            if let Err(e) = intake.submit(vec![msg]).await {
                warn!(schedule = %result.name, error = %e, "the outbox refused a schedule result");
            }
        }
        let _ = runner.await;
    })
}

/// The outbox as the bridge's way upstream.
pub(super) fn outbox_upstream(
    cfg: &Config,
    outbox: &Outbox,
    clock: &SharedClock,
) -> Arc<dyn Upstream> {
    Arc::new(OutboxUpstream {
        intake: outbox.intake.clone(),
        device_id: cfg.hub.endpoint.device_id().to_string(),
        extended: cfg.store.extended_data.clone(),
        clock: clock.clone(),
    })
}

struct OutboxUpstream {
    intake: Intake,
    device_id: String,
    extended: Map<String, Value>,
    clock: SharedClock,
}

impl Upstream for OutboxUpstream {
    fn attribute(&self, change: AttributeChange) -> BoxFuture<Result<(), String>> {
        let msg = NewMessage::attribute(&self.device_id, &change, &self.extended, self.clock.now());
        let intake = self.intake.clone();
        Box::pin(async move {
            intake
                .submit(vec![msg])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Delivery to the hub, upkeep (expiry, failures, compaction) and one task
/// per webhook.
pub(super) fn outbox_tasks(
    cfg: &Config,
    outbox: &Outbox,
    hub: HubHandle,
    deliveries: mpsc::Receiver<Delivery>,
    liveness: &Liveness,
    shutdown: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, String> {
    let mut tasks = vec![
        spawn_hub_sink(
            outbox,
            hub,
            deliveries,
            HubSinkOptions {
                max_messages_per_second: cfg.hub.max_messages_per_second,
                batch_max_bytes: cfg.store.batch_max_bytes,
            },
            liveness.register("outbox hub delivery", Duration::from_secs(120)),
            shutdown.child_token(),
        ),
        spawn_upkeep(
            outbox,
            liveness.register("outbox upkeep", Duration::from_secs(120)),
            shutdown.child_token(),
        ),
    ];
    for w in &cfg.webhooks {
        let beat = liveness.register("outbox webhook", Duration::from_secs(300));
        let task = spawn_webhook(outbox, w.clone(), beat, shutdown.child_token())
            .map_err(|e| e.to_string())?;
        tasks.push(task);
    }
    Ok(tasks)
}

/// Reported properties: agent version, start time, capabilities.
pub(super) fn reported_properties(router: &Router, clock: &SharedClock) -> Map<String, Value> {
    let doc = json!({
        "agent": { "name": "tether", "version": env!("CARGO_PKG_VERSION") },
        "startedAt": unix_seconds(clock.now()),
        "capabilities": { "methods": router.method_names() },
    });
    match doc {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Expiry of the device's TLS client certificate, for the metrics.
pub(super) fn client_cert_not_after(cfg: &Config) -> Option<u64> {
    let cert = match &cfg.hub.endpoint {
        HubEndpoint::Azure(a) => match &a.auth {
            AzureAuth::X509(c) => Some(c),
            _ => None,
        },
        HubEndpoint::Broker(b) => b.client_cert.as_ref(),
    }?;
    certinfo::pem_file_not_after(&cert.cert_file)
}
