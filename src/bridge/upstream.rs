//! Where MCU values go: the [`Upstream`] (the durable outbox in the daemon,
//! a channel in tests) and the hub's reported properties. Both are fed
//! from the bridge task without ever waiting on them, because afLib's
//! handshake timing does not allow the serial loop to stall on a disk sync
//! or a slow hub.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::health::BridgeStats;
use crate::hub::methods::BoxFuture;
use crate::hub::HubHandle;

/// Attribute messages waiting for the upstream. At 9600 baud the MCU can
/// report about 100 values per second, so this rides out a few seconds of
/// a slow disk before dropping (and counting) messages.
const UPSTREAM_QUEUE: usize = 1024;

/// One attribute value on its way upstream: the outbox's own type, so the
/// bridge and the admin API build messages the same way.
pub(crate) use tether_protocol::afero::AttributeChange;

/// Accepts attribute messages for the cloud (implemented by the outbox).
pub(crate) trait Upstream: Send + Sync {
    /// Takes one change; `Err` is logged and counted, not retried.
    fn attribute(&self, change: AttributeChange) -> BoxFuture<Result<(), String>>;
}

/// Which attributes go upstream (`bridge.forward`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Forward {
    only: Option<HashSet<u16>>,
}

impl Forward {
    /// An empty list means the default: every value the MCU reports (its
    /// own attributes and module attributes it sets) and module attributes
    /// the cloud sets.
    pub(crate) fn new(list: &[u16]) -> Self {
        Self {
            only: (!list.is_empty()).then(|| list.iter().copied().collect()),
        }
    }

    /// Whether changes of `attr_id` are forwarded.
    pub(crate) fn allows(&self, attr_id: u16) -> bool {
        self.only.as_ref().is_none_or(|s| s.contains(&attr_id))
    }
}

/// The sending side used by the bridge task: never waits.
#[derive(Clone)]
pub(crate) struct UpstreamQueue {
    tx: mpsc::Sender<AttributeChange>,
    stats: Arc<BridgeStats>,
}

impl UpstreamQueue {
    pub(crate) fn push(&self, change: AttributeChange) {
        if let Err(e) = self.tx.try_send(change) {
            self.stats.count_upstream_dropped();
            warn!(error = %e, "upstream queue full; dropping an attribute message");
        }
    }
}

/// Starts the task that hands queued changes to `upstream` in order.
pub(crate) fn spawn_forwarder(
    upstream: Arc<dyn Upstream>,
    stats: Arc<BridgeStats>,
    shutdown: CancellationToken,
) -> (UpstreamQueue, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<AttributeChange>(UPSTREAM_QUEUE);
    let queue = UpstreamQueue {
        tx,
        stats: stats.clone(),
    };
    let task = tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                // Stop taking new work at shutdown; what is queued is lost
                // like any value the MCU reports after the stop.
                _ = shutdown.cancelled() => return,
                c = rx.recv() => match c { Some(c) => c, None => return },
            };
            let id = change.attribute_id;
            if let Err(e) = upstream.attribute(change).await {
                stats.count_upstream_failure();
                warn!(attribute = id, error = %e, "upstream refused an attribute message");
            }
        }
    });
    (queue, task)
}

/// Last known values for the reported properties (`attributes.<id>`),
/// coalesced per attribute so the map stays bounded by the profile, and
/// sent whenever a hub is attached.
#[derive(Default)]
pub(crate) struct Reporter {
    pending: Mutex<BTreeMap<u16, String>>,
    wake: Notify,
    hub: OnceLock<HubHandle>,
}

impl Reporter {
    pub(crate) fn put(&self, attr_id: u16, display: String) {
        self.lock().insert(attr_id, display);
        self.wake.notify_one();
    }

    /// Gives the reporter its hub; only the first call counts.
    pub(crate) fn attach(&self, hub: HubHandle) {
        if self.hub.set(hub).is_err() {
            warn!("the bridge already has a hub handle; ignoring the second one");
        }
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, String>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends pending values until shutdown.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
            }
            let Some(hub) = self.hub.get() else { continue };
            let batch = std::mem::take(&mut *self.lock());
            if batch.is_empty() {
                continue;
            }
            let attributes: Map<String, Value> = batch
                .into_iter()
                .map(|(id, v)| (id.to_string(), Value::String(v)))
                .collect();
            let mut patch = Map::new();
            patch.insert("attributes".into(), Value::Object(attributes));
            if let Err(e) = hub.report(patch).await {
                // Only after shutdown; nothing left to report to.
                warn!(error = %e, "cannot report bridge attributes");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_forward_list_forwards_everything_and_a_list_only_its_ids() {
        let all = Forward::new(&[]);
        assert!(all.allows(1) && all.allows(1024));
        let only = Forward::new(&[1024]);
        assert!(only.allows(1024) && !only.allows(1));
    }

    #[tokio::test]
    async fn a_full_upstream_queue_drops_and_counts_instead_of_blocking() {
        struct Never;
        impl Upstream for Never {
            fn attribute(&self, _: AttributeChange) -> BoxFuture<Result<(), String>> {
                Box::pin(std::future::pending())
            }
        }
        let stats = Arc::new(BridgeStats::new("test".into()));
        let stop = CancellationToken::new();
        let (queue, task) = spawn_forwarder(Arc::new(Never), stats.clone(), stop.clone());
        let change = AttributeChange {
            attribute_id: 1,
            data: vec![1],
            data_type: firmware_bridge::DataType::Boolean,
        };
        for _ in 0..UPSTREAM_QUEUE + 5 {
            queue.push(change.clone());
        }
        let mut text = String::new();
        crate::admin::RenderMetrics::render(&*stats, &mut text);
        assert!(
            text.contains("tether_bridge_upstream_dropped_total 4\n")
                || text.contains("tether_bridge_upstream_dropped_total 5\n"),
            "{text}"
        );
        stop.cancel();
        task.abort();
    }
}
