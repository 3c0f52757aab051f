//! The supervisor: opens the serial device, runs a session on it, and after
//! a loss recovers (reset pulse if configured, reopen with backoff, boot
//! sequence) without restarting tether. The `Module`, and so the attribute
//! table, outlives every session: [`Runner::run`] owns it and lends it to
//! each session's driver, which hands it back (`AsyncDriver::into_parts`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use embedded_hal::digital::OutputPin;
use firmware_bridge::driver::{AsyncDriver, TimeSource};
use firmware_bridge::{Module, RequestHandle};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::api::{Command, Origin, Reply};
use super::health::BridgeStats;
use super::port::{self, LineSpec, Port, TokioClock};
use super::recovery::{LinkLoss, Recovery};
use super::upstream::{Forward, Reporter, UpstreamQueue};
use super::{BridgeConfig, Tuning};
use crate::backoff::Backoff;
use crate::service::Beat;

/// Longest the loop stays silent towards the watchdog while idle.
pub(super) const BEAT_TICK: Duration = Duration::from_secs(5);

/// Where values go.
pub(crate) struct Outputs {
    pub forward: Forward,
    pub upstream: UpstreamQueue,
    pub reporter: Arc<Reporter>,
    pub stats: Arc<BridgeStats>,
}

/// A cloud request waiting for the MCU's answer.
pub(super) struct Waiter {
    pub attr_id: u16,
    pub origin: Origin,
    pub reply: Option<oneshot::Sender<Reply>>,
    pub deadline: Instant,
}

/// How a session ended.
pub(super) enum End {
    Shutdown,
    Lost(LinkLoss),
}

/// The bridge task's state.
pub(crate) struct Runner<P> {
    pub(super) device: PathBuf,
    pub(super) baud: u32,
    pub(super) module_reset_line: Option<LineSpec>,
    pub(super) timeout: Duration,
    pub(super) tuning: Tuning,
    pub(super) clock: TokioClock,
    pub(super) recovery: Recovery<P>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) pending: HashMap<RequestHandle, Waiter>,
    pub(super) out: Outputs,
    pub(super) beat: Beat,
    pub(super) shutdown: CancellationToken,
}

impl<P: OutputPin + Send + 'static> Runner<P> {
    pub(crate) fn new(
        cfg: &BridgeConfig,
        tuning: Tuning,
        mcu_reset: Option<P>,
        commands: mpsc::Receiver<Command>,
        out: Outputs,
        beat: Beat,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            device: cfg.device.clone(),
            baud: cfg.baud,
            module_reset_line: cfg.module_reset_line.clone(),
            timeout: cfg.timeout,
            tuning,
            clock: TokioClock::new(),
            recovery: Recovery::new(mcu_reset),
            commands,
            pending: HashMap::new(),
            out,
            beat,
            shutdown,
        }
    }

    /// Runs `module` until shutdown.
    pub(crate) async fn run(mut self, mut module: Module) {
        let mut backoff = Backoff::new(self.tuning.reopen_base, self.tuning.reopen_cap);
        loop {
            let Some(port) = self.open(&mut module, &mut backoff).await else {
                return;
            };
            // Whatever the MCU saw before, it gets a full boot sequence.
            let now = self.clock.now_ms();
            module.restart(now);
            let driver = AsyncDriver::new(port, self.clock, module);
            let (end, back) = match self.reset_input() {
                Some(pin) => self.session(driver.with_reset_input(pin)).await,
                None => self.session(driver).await,
            };
            module = back;
            self.out.stats.set_device_open(false);
            match end {
                End::Shutdown => return,
                End::Lost(loss) => {
                    self.out.stats.set_down(loss.label());
                    debug!(%loss, "closing the serial device");
                    self.fail_all(503, "the link to the MCU was lost before it answered");
                    self.reset_mcu(&loss).await;
                }
            }
        }
    }

    /// Opens the device, retrying with backoff; `None` at shutdown. Cloud
    /// commands are still served meanwhile (module attributes from the
    /// table, 503 for the MCU's).
    async fn open(&mut self, module: &mut Module, backoff: &mut Backoff) -> Option<Port> {
        let mut failing = false;
        loop {
            match port::open(&self.device, self.baud) {
                Ok(p) => {
                    backoff.reset();
                    self.out.stats.set_device_open(true);
                    if failing {
                        info!(device = %self.device.display(), "serial device is back");
                    }
                    return Some(p);
                }
                Err(e) => {
                    if !failing {
                        warn!(device = %self.device.display(), error = %e,
                            "cannot open the serial device; retrying");
                        failing = true;
                    }
                    self.out.stats.set_down("device-unavailable");
                }
            }
            let delay = backoff.next_delay(&mut rand::thread_rng());
            self.beat.beat_expecting(delay + BEAT_TICK);
            if !self.wait_offline(module, Instant::now() + delay).await {
                return None;
            }
        }
    }

    /// Serves commands until `until`; false at shutdown.
    async fn wait_offline(&mut self, module: &mut Module, until: Instant) -> bool {
        loop {
            let next = self.next_deadline().map_or(until, |d| d.min(until));
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => {
                        let now = self.clock.now_ms();
                        self.apply(cmd, module, now, false);
                    }
                    None => return false,
                },
                _ = tokio::time::sleep_until(next) => {
                    self.expire();
                    if Instant::now() >= until {
                        return true;
                    }
                }
            }
        }
    }

    /// The module's reset input for one session, when configured. It is
    /// requested per session because the driver keeps the pin.
    fn reset_input(&self) -> Option<linux_embedded_hal::CdevPin> {
        let spec = self.module_reset_line.as_ref()?;
        port::module_reset_pin(spec)
            .map_err(|e| warn!(error = %e, "cannot use bridge.module_reset_line"))
            .ok()
    }

    /// Pulses the MCU's reset line when configured and the loss calls for
    /// it; true when it did.
    pub(super) async fn reset_mcu(&mut self, loss: &LinkLoss) -> bool {
        match self.recovery.recover(loss).await {
            Ok(true) => {
                self.out.stats.count_reset_pulse();
                info!(reason = loss.label(), "pulsed the MCU reset line");
                true
            }
            Ok(false) => false,
            Err(kind) => {
                warn!(?kind, "cannot pulse the MCU reset line");
                false
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|w| w.deadline).min()
    }

    /// Answers 504 to requests past `bridge.timeout`.
    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<RequestHandle> = self
            .pending
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(h, _)| *h)
            .collect();
        for h in late {
            if let Some(w) = self.pending.remove(&h) {
                let r = Reply::error(
                    504,
                    Some(w.attr_id),
                    "timeout",
                    "the MCU did not answer within bridge.timeout",
                );
                finish(w, r);
            }
        }
    }

    fn fail_all(&mut self, status: u16, detail: &str) {
        for (_, w) in self.pending.drain() {
            let r = Reply::error(status, Some(w.attr_id), "link lost", detail);
            finish(w, r);
        }
    }
}

/// Sends a reply to whoever waits, or logs it for C2D and desired sets.
pub(super) fn finish(w: Waiter, r: Reply) {
    if let Some(tx) = w.reply {
        // The caller may have given up; nothing to do then.
        let _ = tx.send(r);
    } else if r.status == 200 {
        debug!(attribute = w.attr_id, origin = ?w.origin, "cloud set applied");
    } else {
        warn!(attribute = w.attr_id, origin = ?w.origin, status = r.status,
            answer = %r.body, "cloud set not applied");
    }
}
