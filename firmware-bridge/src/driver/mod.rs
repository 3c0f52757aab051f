//! Drivers that move bytes and time between a UART and [`crate::Module`].
//! They hold no protocol logic; the optional reset lines are handled here
//! because they are IO.

mod asynch;
mod blocking;

pub use asynch::{AsyncDriver, TimeSource};
pub use blocking::BlockingDriver;

use core::convert::Infallible;

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

/// How long the MCU's reset line is held low. The spec asks for at least
/// 250 ms (afPro-UART); a margin covers slow pin drivers.
pub const RESET_PULSE_MS: u32 = 300;

/// Bytes read from the UART per call.
pub(crate) const READ_CHUNK: usize = 64;

/// Failure of a driver's IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DriverError<E: core::fmt::Debug> {
    /// The UART failed.
    #[error("uart error: {0:?}")]
    Uart(E),
    /// The UART reported end of stream.
    #[error("uart closed")]
    Closed,
    /// A reset pin failed.
    #[error("reset pin error: {0:?}")]
    Pin(ErrorKind),
}

pub(crate) fn pin_error(e: impl embedded_hal::digital::Error) -> ErrorKind {
    e.kind()
}

/// Stands in for a reset line the board does not have.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPin;

impl ErrorType for NoPin {
    type Error = Infallible;
}

impl OutputPin for NoPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl InputPin for NoPin {
    /// Never asserted: the reset input is active low.
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(true)
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(false)
    }
}

/// Edge tracking of the active-low reset input the MCU drives.
#[derive(Debug, Default)]
pub(crate) struct ResetInput {
    held: bool,
}

/// What the reset input means for this step.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ResetState {
    /// Not asserted and no release just now.
    Running,
    /// Held in reset: stay silent.
    Held,
    /// Just released: boot again.
    Released,
}

impl ResetInput {
    pub(crate) fn sample<P: InputPin>(&mut self, pin: &mut P) -> Result<ResetState, ErrorKind> {
        let low = pin.is_low().map_err(pin_error)?;
        let was = core::mem::replace(&mut self.held, low);
        Ok(match (was, low) {
            (_, true) => ResetState::Held,
            (true, false) => ResetState::Released,
            (false, false) => ResetState::Running,
        })
    }
}
