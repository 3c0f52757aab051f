//! Starting a bridge on a pty path with a simulated MCU behind it (the
//! in-crate counterpart of `tether_testkit::mcu::Rig`, whose types are the
//! non-test build's).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tether_testkit::mcu::{blink_profile, Mcu};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bridge::{self, AttributeChange, BridgeHandle, Tuning, Upstream};
use crate::config::BridgeConfig;
use crate::hub::methods::BoxFuture;
use crate::hub::HubHandle;
use crate::service::Beat;

/// Every wait in the bridge tests.
pub(super) const WAIT: Duration = Duration::from_secs(10);

/// An [`Upstream`] that hands every change to a channel.
struct ChannelUpstream(mpsc::Sender<AttributeChange>);

impl Upstream for ChannelUpstream {
    fn attribute(&self, change: AttributeChange) -> BoxFuture<Result<(), String>> {
        let tx = self.0.clone();
        Box::pin(async move { tx.send(change).await.map_err(|e| e.to_string()) })
    }
}

/// A `[bridge]` section for a device at `device`.
fn bridge_config(device: &Path, timeout: Duration) -> BridgeConfig {
    BridgeConfig {
        device: device.to_path_buf(),
        baud: 9600,
        profile: Some(blink_profile()),
        mcu_reset_line: None,
        module_reset_line: None,
        forward: Vec::new(),
        timeout,
    }
}

/// Fast reopen timings and no liveness probe, so tests take seconds.
fn fast_tuning() -> Tuning {
    Tuning {
        reopen_base: Duration::from_millis(50),
        reopen_cap: Duration::from_millis(400),
        probe_interval: None,
        ..Default::default()
    }
}

/// A bridge on a fresh pty with a simulated MCU behind it.
pub(super) struct Rig {
    pub(super) dir: tempfile::TempDir,
    pub(super) link: PathBuf,
    pub(super) mcu: Mcu,
    pub(super) bridge: BridgeHandle,
    pub(super) upstream: mpsc::Receiver<AttributeChange>,
    stop: CancellationToken,
}

impl Rig {
    /// Starts the MCU (attribute 1 = false) and the bridge, without a hub.
    pub(super) async fn start(timeout: Duration) -> Rig {
        Self::start_with(timeout, None::<firmware_bridge::driver::NoPin>, None).await
    }

    /// With a reset pin and a hub.
    pub(super) async fn start_with<P>(
        timeout: Duration,
        pin: Option<P>,
        hub: Option<HubHandle>,
    ) -> Rig
    where
        P: embedded_hal::digital::OutputPin + Send + 'static,
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let link = dir.path().join("ttyMCU");
        let mcu = Mcu::at(&link, &[(1, vec![0])]);
        let (tx, upstream) = mpsc::channel(256);
        let stop = CancellationToken::new();
        let bridge = bridge::spawn_with(
            &bridge_config(&link, timeout),
            fast_tuning(),
            pin,
            Arc::new(ChannelUpstream(tx)),
            hub,
            Beat::detached(),
            stop.clone(),
        )
        .expect("bridge starts");
        Rig {
            dir,
            link,
            mcu,
            bridge,
            upstream,
            stop,
        }
    }

    /// Waits for the first boot and the link-up it brings.
    pub(super) async fn booted(&mut self) {
        self.mcu.booted(1, WAIT).await;
        self.link_up(true).await;
    }

    /// Waits until the bridge reports the link `up` (or down).
    pub(super) async fn link_up(&self, up: bool) {
        let stats = self.bridge.stats();
        let deadline = Instant::now() + WAIT;
        while stats.link_up() != up {
            assert!(
                Instant::now() < deadline,
                "bridge link never became up={up}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next upstream change of `attr_id`, skipping others.
    pub(super) async fn upstream_of(&mut self, attr_id: u16) -> AttributeChange {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.upstream.recv()).await {
                Ok(Some(c)) if c.attribute_id == attr_id => return c,
                Ok(Some(_)) => {}
                _ => panic!("no upstream change of attribute {attr_id} within {WAIT:?}"),
            }
        }
    }

    /// Stops the bridge and waits for its tasks.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.bridge.join())
            .await
            .expect("bridge stops");
    }
}
