//! What the bridge does when the link to the MCU breaks: decide whether to
//! pulse the MCU's reset line (the reopen delays are [`crate::backoff`]'s).
//! Generic over embedded-hal's `OutputPin` so the decision is
//! tested with embedded-hal-mock instead of a GPIO chip.

use std::fmt;
use std::time::Duration;

use embedded_hal::digital::{Error as _, ErrorKind, OutputPin};
use firmware_bridge::driver::RESET_PULSE_MS;

/// Why the link was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkLoss {
    /// The serial device failed or vanished (USB unplugged, pty closed).
    DeviceGone(String),
    /// Several transactions in a row broke: the MCU looks stuck.
    McuStuck,
    /// The MCU stopped answering the liveness probe.
    McuUnresponsive,
    /// Too many corrupt sync frames in a short time (noise, wrong baud rate).
    ChecksumStorm,
    /// The MCU asked us to reboot (SET 65012 = 1); it is alive and waits
    /// for a fresh boot sequence.
    RebootRequested,
}

impl LinkLoss {
    /// Whether resetting the MCU can help. A reboot the MCU asked for needs
    /// only our boot sequence; every other loss may be an MCU that hangs.
    pub(crate) fn wants_mcu_reset(&self) -> bool {
        !matches!(self, LinkLoss::RebootRequested)
    }

    /// Short label for logs, health and metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            LinkLoss::DeviceGone(_) => "device-gone",
            LinkLoss::McuStuck => "mcu-stuck",
            LinkLoss::McuUnresponsive => "mcu-unresponsive",
            LinkLoss::ChecksumStorm => "checksum-storm",
            LinkLoss::RebootRequested => "reboot-requested",
        }
    }
}

impl fmt::Display for LinkLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkLoss::DeviceGone(why) => write!(f, "serial device lost: {why}"),
            LinkLoss::McuStuck => f.write_str("MCU stuck: transactions keep breaking"),
            LinkLoss::McuUnresponsive => f.write_str("MCU stopped answering"),
            LinkLoss::ChecksumStorm => f.write_str("too many corrupt sync frames"),
            LinkLoss::RebootRequested => f.write_str("MCU requested a reboot"),
        }
    }
}

/// The recovery policy plus the optional MCU reset line.
#[derive(Debug)]
pub(crate) struct Recovery<P> {
    mcu_reset: Option<P>,
    pulses: u64,
}

impl<P: OutputPin> Recovery<P> {
    /// A policy with or without a reset line.
    pub(crate) fn new(mcu_reset: Option<P>) -> Self {
        Self {
            mcu_reset,
            pulses: 0,
        }
    }

    /// Handles one loss: pulses the MCU's reset line (low for
    /// [`RESET_PULSE_MS`], then high) when one is configured and the loss
    /// calls for it. Returns whether it pulsed, so the caller tells the
    /// session ([`firmware_bridge::Module::mcu_reset_done`]).
    ///
    /// GPIO writes are single non-blocking ioctls, so they run on the
    /// runtime; only the pulse width is awaited.
    ///
    /// # Errors
    /// The pin's error kind when a write fails; the line is left as is.
    pub(crate) async fn recover(&mut self, loss: &LinkLoss) -> Result<bool, ErrorKind> {
        let Some(pin) = self.mcu_reset.as_mut() else {
            return Ok(false);
        };
        if !loss.wants_mcu_reset() {
            return Ok(false);
        }
        pin.set_low().map_err(|e| e.kind())?;
        tokio::time::sleep(Duration::from_millis(u64::from(RESET_PULSE_MS))).await;
        pin.set_high().map_err(|e| e.kind())?;
        self.pulses += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    #[tokio::test(start_paused = true)]
    async fn a_stuck_mcu_gets_one_reset_pulse_of_the_spec_width() {
        let pin = Mock::new(&[Transaction::set(State::Low), Transaction::set(State::High)]);
        let mut r = Recovery::new(Some(pin));
        let started = tokio::time::Instant::now();
        assert_eq!(r.recover(&LinkLoss::McuStuck).await, Ok(true));
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_eq!(r.pulses, 1);
        r.mcu_reset.take().expect("pin").done();
    }

    #[tokio::test(start_paused = true)]
    async fn a_vanished_device_and_a_silent_mcu_also_pulse_the_line() {
        for loss in [
            LinkLoss::DeviceGone("EIO".into()),
            LinkLoss::McuUnresponsive,
            LinkLoss::ChecksumStorm,
        ] {
            let pin = Mock::new(&[Transaction::set(State::Low), Transaction::set(State::High)]);
            let mut r = Recovery::new(Some(pin));
            assert_eq!(r.recover(&loss).await, Ok(true), "{loss}");
            r.mcu_reset.take().expect("pin").done();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reboot_the_mcu_asked_for_leaves_the_reset_line_alone() {
        let pin = Mock::new(&[]);
        let mut r = Recovery::new(Some(pin));
        assert_eq!(r.recover(&LinkLoss::RebootRequested).await, Ok(false));
        assert_eq!(r.pulses, 0);
        r.mcu_reset.take().expect("pin").done();
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_reset_line_recovery_only_reopens() {
        let mut r: Recovery<Mock> = Recovery::new(None);
        assert_eq!(r.recover(&LinkLoss::McuStuck).await, Ok(false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_reset_line_is_reported_not_retried() {
        let broken = embedded_hal_mock::eh1::MockError::Io(std::io::ErrorKind::Other);
        let pin = Mock::new(&[Transaction::set(State::Low).with_error(broken)]);
        let mut r = Recovery::new(Some(pin));
        assert_eq!(r.recover(&LinkLoss::McuStuck).await, Err(ErrorKind::Other));
        assert_eq!(r.pulses, 0);
        r.mcu_reset.take().expect("pin").done();
    }
}
