//! The provisioning task: finds the assignment (cached, or from DPS with
//! backoff), caches it, hands it to the hub session and releases it; then
//! watches the session, and when the hub refuses the identity (device
//! disabled, deleted, moved to another hub) forgets the cache, holds the
//! session and registers again. Errors are logged once per change and
//! shown in `/healthz`; it never gives up and never loops tightly.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tether_protocol::time::unix_seconds;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::config::{HubConfig, HubEndpoint, ProvisioningConfig};
use crate::hub::machine::{ConnState, HubStatus};
use crate::hub::{Failure, HubHandle};

use super::machine::Settings;
use super::status::{ProvisioningHealth, ProvisioningState, ProvisioningStatus};
use super::{cache, driver, Assignment};

/// `hub` with the hub and device id of `assignment`.
pub(crate) fn with_assignment(hub: &HubConfig, assignment: &Assignment) -> HubConfig {
    let mut cfg = hub.clone();
    if let HubEndpoint::Azure(a) = &mut cfg.endpoint {
        a.host_name.clone_from(&assignment.assigned_hub);
        a.device_id.clone_from(&assignment.device_id);
    }
    cfg
}

/// The hub configuration to start the session with, and the cached
/// assignment it uses: with `[hub.provisioning]` and a usable cache in
/// `state_dir`, the cached hub and device id; without a cache, the
/// unassigned hub (the session waits for DPS). Other configs pass through.
/// A cache that cannot be used is logged and ignored.
pub(crate) fn prepare(hub: &HubConfig, state_dir: &Path) -> (HubConfig, Option<Assignment>) {
    let Some(p) = &hub.provisioning else {
        return (hub.clone(), None);
    };
    match cache::read(state_dir, p) {
        Ok(Some(a)) => {
            info!(
                hub = %a.assigned_hub,
                device = %a.device_id,
                "using the hub DPS assigned before (cached)"
            );
            (with_assignment(hub, &a), Some(a))
        }
        Ok(None) => (hub.clone(), None),
        Err(e) => {
            warn!("{e}");
            (hub.clone(), None)
        }
    }
}

/// Starts the provisioning task for `hub` (a config with
/// `[hub.provisioning]`, as [`prepare`] returned it, with `cached` its
/// assignment) driving the session behind `handle`.
pub(crate) fn spawn(
    hub: &HubConfig,
    p: &ProvisioningConfig,
    state_dir: &Path,
    cached: Option<Assignment>,
    handle: HubHandle,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> (JoinHandle<()>, ProvisioningHealth) {
    let mut initial = ProvisioningStatus::new();
    if let Some(a) = &cached {
        initial.state = ProvisioningState::Assigned;
        initial.assigned_hub = Some(a.assigned_hub.clone());
        initial.device_id = Some(a.device_id.clone());
        initial.from_cache = true;
    }
    let (status, rx) = watch::channel(initial);
    let task = Provisioner {
        hub: hub.clone(),
        cfg: p.clone(),
        state_dir: state_dir.to_owned(),
        handle,
        clock,
        status,
        backoff: Backoff::new(p.retry_base, p.retry_cap),
        rng: StdRng::from_entropy(),
        last_logged: None,
        shutdown,
    };
    (tokio::spawn(task.run(cached)), ProvisioningHealth(rx))
}

struct Provisioner {
    hub: HubConfig,
    cfg: ProvisioningConfig,
    state_dir: PathBuf,
    handle: HubHandle,
    clock: SharedClock,
    status: watch::Sender<ProvisioningStatus>,
    /// Between registrations, and between a refused identity and the
    /// next registration: reset once the hub accepted an assignment.
    backoff: Backoff,
    rng: StdRng,
    /// The last error logged at warn, so a repeated one is logged once.
    last_logged: Option<String>,
    shutdown: CancellationToken,
}

impl Provisioner {
    async fn run(mut self, cached: Option<Assignment>) {
        let mut current = cached;
        loop {
            let baseline = self.handle.status().disconnects;
            let assignment = match current.take() {
                Some(a) => a,
                None => {
                    let Some(a) = self.register_until_assigned().await else {
                        break;
                    };
                    if !self.use_assignment(&a) {
                        self.shutdown.cancelled().await;
                        break;
                    }
                    a
                }
            };
            let Some(refusal) = self.watch_hub(baseline).await else {
                break;
            };
            self.handle.hold();
            self.report(format!(
                "the hub {} refused device {:?} ({refusal}); registering with DPS again",
                assignment.assigned_hub, assignment.device_id
            ));
            if let Err(e) = cache::remove(&self.state_dir) {
                warn!("{e}");
            }
            if !self.pause(None).await {
                break;
            }
        }
        self.status
            .send_modify(|s| s.state = ProvisioningState::Stopped);
    }

    /// Registers until DPS assigns a hub; `None` on shutdown.
    async fn register_until_assigned(&mut self) -> Option<Assignment> {
        loop {
            self.status.send_modify(|s| {
                s.state = ProvisioningState::Registering;
                s.registrations += 1;
            });
            let target = driver::target(&self.hub, &self.cfg);
            let opts = match driver::options(&self.hub, &self.cfg, unix_seconds(self.clock.now())) {
                Ok(o) => o,
                Err(e) => {
                    self.report(format!("cannot connect to DPS at {target}: {e}"));
                    if !self.pause(Some(Failure::Tls)).await {
                        return None;
                    }
                    continue;
                }
            };
            let settings = Settings {
                registration_id: self.cfg.registration_id.clone(),
                payload: self.cfg.payload.clone(),
                poll_interval: self.cfg.poll_interval,
                response_timeout: self.cfg.response_timeout,
            };
            debug!(%target, "registering with DPS");
            let (status, last_logged) = (&self.status, &mut self.last_logged);
            let outcome = driver::register(
                opts,
                settings,
                &target,
                self.hub.connect_timeout,
                &self.shutdown,
                |e| report(status, last_logged, e.to_string()),
            )
            .await?;
            match outcome {
                Ok(a) => return Some(a),
                Err(e) => {
                    self.report(e.to_string());
                    if !self.pause(Some(e.failure())).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Caches `a` and hands it to the session. False when the session
    /// cannot take it without a restart (another device id).
    fn use_assignment(&mut self, a: &Assignment) -> bool {
        info!(hub = %a.assigned_hub, device = %a.device_id, "DPS assigned the device to a hub");
        if let Err(e) = cache::write(
            &self.state_dir,
            &self.cfg,
            a,
            unix_seconds(self.clock.now()),
        ) {
            // The assignment still serves this run; the next start asks DPS.
            warn!("{e}");
        }
        self.last_logged = None;
        let next = with_assignment(&self.hub, a);
        if let Err(e) = self.handle.reconfigure(&next) {
            let message = format!(
                "DPS assigned device {:?} on {}, but the session runs as {:?} ({e}); the \
                 assignment is cached: restart tether (systemctl restart tether) to use it",
                a.device_id,
                a.assigned_hub,
                self.handle.topics().device_id()
            );
            error!("{message}");
            self.status.send_modify(|s| {
                s.state = ProvisioningState::RestartNeeded;
                s.last_error = Some(message);
            });
            return false;
        }
        self.status.send_modify(|s| {
            s.state = ProvisioningState::Assigned;
            s.assigned_hub = Some(a.assigned_hub.clone());
            s.device_id = Some(a.device_id.clone());
            s.from_cache = false;
            s.last_error = None;
        });
        self.handle.release();
        true
    }

    /// Waits until the hub refuses the identity (an auth failure after
    /// `baseline` disconnects); returns what it said, `None` on shutdown.
    async fn watch_hub(&mut self, baseline: u64) -> Option<String> {
        let mut rx = self.handle.watch_status();
        loop {
            {
                let s = rx.borrow_and_update();
                if s.is_connected() {
                    self.backoff.reset();
                }
                if refused(&s, baseline) {
                    return Some(s.last_error.clone().unwrap_or_default());
                }
            }
            tokio::select! {
                changed = rx.changed() => changed.ok()?,
                () = self.shutdown.cancelled() => return None,
            }
        }
    }

    /// Waits the backoff's next delay (at least the retry base after
    /// failures only the cloud can fix). False on shutdown.
    async fn pause(&mut self, failure: Option<Failure>) -> bool {
        let floor = match failure {
            Some(Failure::Network) => std::time::Duration::ZERO,
            _ => self.cfg.retry_base,
        };
        let delay = self.backoff.next_delay_at_least(floor, &mut self.rng);
        debug!(?delay, "next registration with DPS");
        self.status
            .send_modify(|s| s.state = ProvisioningState::Waiting);
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.shutdown.cancelled() => false,
        }
    }

    fn report(&mut self, message: String) {
        report(&self.status, &mut self.last_logged, message);
    }
}

/// Whether the session's latest failure is the hub refusing the identity.
fn refused(s: &HubStatus, baseline: u64) -> bool {
    s.disconnects > baseline
        && s.state == ConnState::Disconnected
        && s.last_failure == Some(Failure::Auth)
}

/// Shows `message` as the last error, logging it only when it changed.
fn report(
    status: &watch::Sender<ProvisioningStatus>,
    last_logged: &mut Option<String>,
    message: String,
) {
    if last_logged.as_deref() == Some(message.as_str()) {
        debug!("{message}");
    } else {
        warn!("{message}");
        *last_logged = Some(message.clone());
    }
    status.send_modify(|s| s.last_error = Some(message));
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn status(state: ConnState, failure: Option<Failure>, disconnects: u64) -> HubStatus {
        let mut s = HubStatus::new(UNIX_EPOCH);
        s.state = state;
        s.last_failure = failure;
        s.disconnects = disconnects;
        s
    }

    /// Only a new auth refusal counts: the one that made tether register
    /// again is still in the status while the new identity connects.
    #[test]
    fn only_a_fresh_auth_refusal_means_the_identity_was_refused() {
        let auth = Some(Failure::Auth);
        assert!(refused(&status(ConnState::Disconnected, auth, 3), 2));
        assert!(!refused(&status(ConnState::Disconnected, auth, 2), 2));
        assert!(!refused(&status(ConnState::Connecting, auth, 3), 2));
        let network = Some(Failure::Network);
        assert!(!refused(&status(ConnState::Disconnected, network, 3), 2));
        let throttled = Some(Failure::Throttled);
        assert!(!refused(&status(ConnState::Disconnected, throttled, 3), 2));
    }

    #[test]
    fn an_assignment_names_the_hub_and_the_device() {
        let text = "[hub.provisioning]\nid_scope = \"s\"\nregistration_id = \"r\"\n\
                    symmetric_key = \"a2V5\"\n";
        let cfg = crate::config::parse(text, Path::new("/")).unwrap();
        let a = Assignment::new(Some("h.net".into()), Some("d".into())).unwrap();
        let HubEndpoint::Azure(hub) = with_assignment(&cfg.hub, &a).endpoint else {
            panic!("Azure")
        };
        assert_eq!(
            (hub.host_name.as_str(), hub.device_id.as_str()),
            ("h.net", "d")
        );
        assert!(hub.is_assigned());
    }
}
