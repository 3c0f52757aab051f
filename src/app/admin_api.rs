//! The admin listener with every component's routes, metrics and checks.

use std::sync::Arc;

use tether_outbox::salvage::Salvager;
use tether_outbox::Outbox;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, metrics::BuildInfo, metrics::HubMetrics, Admin, AdminError};
use crate::bridge::BridgeHandle;
use crate::clock::SharedClock;
use crate::config::{AdminListen, Config};
use crate::hub::provisioning::ProvisioningHealth;
use crate::hub::HubHandle;
use crate::outbox::metrics::OutboxMetrics;
use crate::relay::Relay;

use super::components::client_cert_not_after;

/// The components the admin API exposes.
pub(super) struct Parts<'a> {
    pub hub: &'a HubHandle,
    pub outbox: &'a Outbox,
    pub relay: &'a Arc<Relay>,
    pub bridge: Option<&'a BridgeHandle>,
    pub salvager: &'a Arc<Salvager>,
    /// DPS provisioning, with `[hub.provisioning]`.
    pub provisioning: Option<Arc<ProvisioningHealth>>,
    /// Told where the API listens once bound (the port the system picked
    /// for port 0).
    pub listening: &'a watch::Sender<Option<AdminListen>>,
}

/// Binds and serves the admin API when `[admin] listen` is set.
pub(super) async fn start(
    cfg: &Config,
    parts: Parts<'_>,
    clock: &SharedClock,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>, AdminError> {
    let Some(listen) = &cfg.admin.listen else {
        return Ok(None);
    };
    let bound = admin::bind(listen).await?;
    parts.listening.send_replace(Some(bound.address(listen)));
    let outbox = Arc::new(OutboxMetrics(parts.outbox.core.clone()));
    let mut state = Admin {
        hub: parts.hub.watch_status(),
        metrics: vec![
            Arc::new(BuildInfo),
            HubMetrics::new(parts.hub.watch_status(), client_cert_not_after(cfg)),
            outbox.clone(),
            parts.relay.clone(),
        ],
        checks: vec![outbox],
        token: cfg.admin.token.clone(),
    };
    if let Some(p) = parts.provisioning {
        state.checks.push(p);
    }
    if let Some(b) = parts.bridge {
        state.metrics.push(b.stats());
        state.checks.push(b.stats());
    }
    let v1 = admin::attributes::router(Arc::new(admin::attributes::AttributesApi {
        intake: parts.outbox.intake.clone(),
        device_id: cfg.hub.endpoint.device_id().to_string(),
        extended_data: cfg.store.extended_data.clone(),
        clock: clock.clone(),
    }))
    .merge(admin::failures::router(Arc::new(
        admin::failures::FailuresApi {
            core: parts.outbox.core.clone(),
            intake: parts.outbox.intake.clone(),
        },
    )))
    .merge(admin::import::router(Arc::new(admin::import::ImportApi {
        salvager: parts.salvager.clone(),
    })));
    Ok(Some(admin::serve(
        bound,
        admin::app(Arc::new(state), v1),
        shutdown,
    )))
}
